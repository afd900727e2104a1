"""What the dashboard makes of a transfer's status hash and events (feed.row, feed.rate_points)."""

from __future__ import annotations

from tasks.dashboard.feed import rate_points, row

SESSION = {"transfer_bytes": 250_000, "pre_transfer_bytes": 1_000_000, "rate": 2000}


def test_a_running_row_has_progress_rate_eta_owner_and_host():
    got = row(
        "t1",
        {
            "state": "RUNNING",
            "owner": "node7:412:ab12cd34",
            "created": "5.0",
            "last": {"type": "STATS", "session": SESSION},
        },
    )
    assert got["host"] == "node7" and got["owner"] == "node7:412:ab12cd34"
    assert (got["bytes"], got["total"], got["rate_kbps"], got["eta_s"]) == (250_000, 1_000_000, 2000, 3.0)
    assert got["stats"] and got["result"] is None and got["created"] == 5.0


def test_after_a_non_engine_event_the_row_says_its_numbers_are_not_current():
    got = row("t1", {"state": "RUNNING", "last": {"type": "CONTROL", "op": "set_rate"}})
    assert not got["stats"] and got["bytes"] == 0


def test_an_ended_row_shows_its_result_and_final_stats():
    result = {"ok": False, "code": 28, "error": "USER_CANCEL", "reason": "cancelled", "attempts": 1, "stats": SESSION}
    got = row("t1", {"state": "CANCELLED", "last": {"type": "RESULT"}, "result": result})
    assert got["result"] == {k: result[k] for k in ("ok", "code", "error", "reason", "attempts")}
    assert got["stats"] and got["bytes"] == 250_000


def test_rate_points_come_from_events_with_an_engine_rate_only():
    events = [
        {"type": "QUEUED", "time": 1.0},
        {"type": "STATS", "time": 2.0, "session": SESSION},
        {"type": "CONTROL", "time": 2.5},
        {"type": "STATS", "time": 3.0, "session": {**SESSION, "rate": 800, "transfer_bytes": 300_000}},
    ]
    assert rate_points(events) == [(2.0, 2000.0, 250_000), (3.0, 800.0, 300_000)]
