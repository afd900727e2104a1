"""The watch view folds events into per-file and total progress, and keeps the final result."""

from __future__ import annotations

import io

from rich.console import Console

from tasks.progress import TransferView


def test_view_tracks_files_total_and_result():
    out = io.StringIO()
    view = TransferView(Console(file=out, width=120), title="total")
    with view:
        for event in [
            {"type": "STATUS", "state": "QUEUED"},
            {"type": "PICKED", "attempt": 1, "worker": "h:1:x"},
            {"type": "START", "file": {"file": "/d/a.bin", "size": 1000, "bytes_written": 0}},
            {"type": "STATS", "file": {"file": "/d/a.bin", "size": 1000, "bytes_written": 400}},
            {"type": "START", "file": {"file": "/d/b.bin", "size": 500, "bytes_written": 100}},
            {"type": "STOP", "file": {"file": "/d/a.bin", "size": 1000, "bytes_written": 1000}},
            {"type": "RETRY", "attempt": 1, "code": 14, "reason": "lost", "delay_s": 1},
            {"type": "RESULT", "ok": True, "attempts": 2, "transfer_id": "t", "time": 1.0},
        ]:
            view.show(event)
    tasks = {task.description: task for task in view.progress.tasks}
    assert tasks["a.bin"].completed == 1000 and tasks["a.bin"].total == 1000
    assert tasks["b.bin"].completed == 100
    assert tasks["total"].completed == 1100 and tasks["total"].total == 1500
    assert view.result == {"ok": True, "attempts": 2}
    assert "RETRY" in out.getvalue() and "code=14" in out.getvalue()


def test_a_senders_files_never_add_up_past_the_total():
    """An upload's events (the sending engine's): the session's FileBytes counts completed files, so it is no
    file's progress; the total follows TransferBytes and never passes the job's size (the demo showed 72/48 MiB)."""
    view = TransferView(Console(file=io.StringIO(), width=120), title="total")
    events = []
    for i, name in enumerate(("/s/a.bin", "/s/b.bin", "/s/c.bin")):
        session = {"pre_transfer_bytes": 3000, "file": name, "transfer_bytes": 1000 * i + 500, "file_bytes": 1000 * i}
        events += [
            {"type": "START", "file": {"file": name, "size": 1000, "bytes_written": 0}},
            {"type": "STATS", "session": session},
            {"type": "STOP", "file": {"file": name, "size": 1000, "bytes_written": 1000}},
        ]
    with view:
        for event in events[:-1]:
            view.show(event)
            total = view.progress.tasks[0]
            assert total.completed <= (total.total or 0), (event, total.completed, total.total)
        tasks = {task.description: task for task in view.progress.tasks}
        assert tasks["total"].completed == 2500 and tasks["total"].total == 3000
        assert tasks["c.bin"].completed < 1000
        view.show(events[-1])
    assert view.progress.tasks[0].completed == 3000
