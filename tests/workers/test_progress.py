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
