"""The pure analyses behind the benchmark tables: sharing and control."""

import json

import pytest

from bench.report import control, markdown, share, write

ENGINE, TCP = "udp:40000>33001", "tcp:41000>5201"


def bins(rates: list[tuple[float, float]], key: str, start: float = 0.0) -> list[dict]:
    """100 ms bins carrying ``mbit_s`` of flow ``key`` from each listed time on."""
    out = []
    for i in range(int(start * 10), 200):
        t = i / 10
        mbit = [r for at, r in rates if at <= t][-1] if any(at <= t for at, _ in rates) else 0
        if mbit:
            out.append({"dir": "ab", "t": t, "bytes": {key: int(mbit * 1e6 / 8 / 10)}})
    return out


def merge(*series: list[dict]) -> list[dict]:
    merged: dict[float, dict] = {}
    for rows in series:
        for row in rows:
            merged.setdefault(row["t"], {"dir": "ab", "t": row["t"], "bytes": {}})["bytes"].update(row["bytes"])
    return sorted(merged.values(), key=lambda r: r["t"])


def test_share_counts_from_the_engines_first_byte():
    data = merge(bins([(0, 90)], TCP), bins([(2, 30)], ENGINE, start=2))
    result = share(data, 1.0, 12.0)
    assert result["seconds"] == 10.0
    assert result["engine_mbit_s"] == 30.0 and result["tcp_mbit_s"] == 90.0
    assert result["engine_share"] == 0.25
    assert len(result["series"]["engine"]) == 10


def test_control_finds_rate_change_on_the_wire_and_in_stats():
    t0 = 100.0
    wire = bins([(1.0, 51.0), (7.3, 20.4)], ENGINE)
    events = [{"t": t0 + 1.0, "type": "INIT"}]
    events += [{"t": t0 + s, "type": "STATS", "Rate": "50000"} for s in range(2, 7)]
    events += [
        {"t": t0 + 7.0, "sent": "RATE", "Rate": 20000},
        {"t": t0 + 7.5, "type": "STATS", "Rate": "30000"},
        {"t": t0 + 7.9, "type": "STATS", "Rate": "20100"},
        {"t": t0 + 12.0, "type": "DONE"},
    ]
    result = control(wire, t0, events, 50_000, 20_000)
    assert result["fixed_mean_vs_target"] == 1.02
    assert result["fixed_max_dev_pct"] == 0.0
    assert result["rate_effective_stats_s"] == 0.9
    assert abs(result["rate_effective_wire_s"] - 0.3) < 0.01


def test_markdown_marks_missing_engine_and_unverified_runs():
    meta = {
        "profile": "quick",
        "started": "now",
        "git": "abc",
        "seconds": 1,
        "cpus": 2,
        "engine_available": False,
        "link_mbit": 100,
        "tcp_cc": "cubic",
    }
    results = [
        {"scenario": "wan", "rtt_ms": 200, "loss_pct": 1, "tool": "engine-fixed", "note": "engine not available"},
        {"scenario": "wan", "rtt_ms": 200, "loss_pct": 1, "tool": "scp", "mbit_s": 1.5, "verified": False},
        {"scenario": "wan", "rtt_ms": 200, "loss_pct": 1, "tool": "scp", "mbit_s": 2.5, "verified": True},
    ]
    text = markdown(meta, results)
    assert "| 200 | 1 | engine n/a | 2.5 (1/2 incomplete) |" in text
    assert "not measured" in text


@pytest.mark.slow
def test_write_produces_json_markdown_and_plots(tmp_path):
    meta = {
        "profile": "quick",
        "started": "now",
        "git": "abc",
        "seconds": 1,
        "cpus": 2,
        "engine_available": True,
        "link_mbit": 100,
        "tcp_cc": "bbr",
    }
    results = [
        {"scenario": "wan", "rtt_ms": rtt, "loss_pct": 1, "tool": tool, "mbit_s": mbit, "verified": True}
        for rtt, tool, mbit in (
            (50, "scp", 40.0),
            (200, "scp", 10.0),
            (50, "engine-fixed", 90.0),
            (200, "engine-fixed", 91.0),
        )
    ]
    results.append(
        {
            "scenario": "sharing",
            "policy": "fair",
            "engine_share": 0.5,
            "series": {"engine": [(0, 50.0), (1, 49.0)], "tcp": [(0, 48.0), (1, 50.0)]},
        }
    )
    results.append({"scenario": "control", "wire": [(0.0, 50.0), (0.1, 20.0)], "stats_rates": [(0.0, 50000)]})
    paths = write(tmp_path, "quick-reno", meta, results)
    names = sorted(p.name for p in paths)
    assert names == [
        "control-quick-reno.png",
        "results-quick-reno.json",
        "results-quick-reno.md",
        "sharing-quick-reno.png",
        "wan-quick-reno.png",
    ]
    for path in paths:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "results-quick-reno.json").read_text())["results"] == json.loads(json.dumps(results))
    assert "| 200 | 1 | 10.0 | 91.0 |" in (tmp_path / "results-quick-reno.md").read_text()
