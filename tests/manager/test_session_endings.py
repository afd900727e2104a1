"""How a session that ends FAILED looks with the real engine: the file in flight, the listener's last event."""

from __future__ import annotations

import os
import signal

import pytest

import faspmanager as fm
from tests.support.files import sha256
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.parametrize("backend", ["engine"], indirect=True)]

SIZE = 2_000_000  # 4 s at the slow 4000 kbit/s: long enough to end it mid-file


def _slow_upload(backend, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(SIZE))
    options = backend.options(destination_root=backend.upload_root())
    backend.slow(options)
    return src, fm.FileUpload(str(src), **backend.up(options=options))


def _in_flight(session) -> bool:
    return (
        any(f["state"] == fm.FileState.TRANSFERRING for f in session.file_stats().values())
        and session.stats().get("transfer_bytes", 0) > 0
    )


def _assert_incomplete(backend, src) -> None:
    landed = backend.remote_root / src.name
    assert not landed.exists() or sha256(landed) != sha256(src)


@pytest.mark.parametrize("end", ["cancel", "kill"])
def test_the_file_in_flight_fails_with_the_session_and_the_listener_hears_one_error(backend, tmp_path, end):
    """cancel: the engine's ERROR 28; kill: the library's own verdict. Either way the file never stopped, so it
    failed, with the session's code and description, and failed_files() names it for a retry; and the listener's
    last event is one ERROR with the final snapshot (none came at all on a kill; never two on a cancel)."""
    src, order = _slow_upload(backend, tmp_path)
    events: list[fm.TransferEvent] = []
    with fm.session(order, ascp_path=backend.ascp_path, listener=events.append) as s:
        s.start()
        assert wait_until(lambda: _in_flight(s), 20), s.file_stats()
        s.cancel() if end == "cancel" else os.kill(s.pid, signal.SIGKILL)
        result = s.finish()
        assert result.failed()
        ((name, stats),) = s.file_stats().items()
        assert name.endswith(src.name)
        assert stats["state"] == fm.FileState.FAILED
        assert stats["error"] == result.stats().get("code") and stats["description"] == result.reason()
        assert s.failed_files() == result.failed_files() == [name]
    _assert_incomplete(backend, src)
    errors = [e for e in events if e.event_type == fm.TransferEventType.ERROR]
    assert len(errors) == 1 and events[-1] is errors[0], [e.event_type for e in events]
    assert errors[0].file_stats is None and errors[0].session_stats == result.stats()
    if end == "cancel":
        assert result.stats()["code"] == 28
    else:
        assert "without reporting DONE or ERROR" in result.reason()


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_stats_events_follow_the_file_in_flight(backend, tmp_path, direction):
    """A STATS event's file_stats shows the bytes of the file in flight moving, not 0 until its STOP."""
    if direction == "upload":
        src, order = _slow_upload(backend, tmp_path)
        landed = backend.remote_root / src.name
    else:
        src = backend.remote_root / "served.bin"
        src.write_bytes(os.urandom(SIZE))
        options = backend.options(destination_root=str(backend.local_root))
        backend.slow(options)
        order = fm.FileDownload(backend.remote(src.name), **backend.down(options=options))
        landed = backend.local_root / src.name
    events: list[fm.TransferEvent] = []
    with fm.session(order, ascp_path=backend.ascp_path, listener=events.append) as s:
        s.start()
        result = s.finish()
        assert result.ok(), result.reason()
    assert landed.stat().st_size == SIZE and sha256(landed) == sha256(src)
    moving = [
        e.file_stats["bytes_written"]
        for e in events
        if e.event_type == fm.TransferEventType.STATS and e.file_stats is not None
    ]
    assert moving == sorted(moving) and all(0 <= n <= SIZE for n in moving), moving
    assert any(0 < n < SIZE for n in moving), moving
    stop = next(e for e in events if e.event_type == fm.TransferEventType.STOP)
    assert stop.file_stats["bytes_written"] == SIZE


def test_an_interrupted_upload_leaves_a_partial_file_that_a_resume_completes(backend, tmp_path):
    """partial_file_suffix defaults to ".partial" (the reference): a file cut off mid-way is never found under
    its final name, and resume_check picks the partial file up under that name."""
    src, order = _slow_upload(backend, tmp_path)
    partial, landed = backend.remote_root / f"{src.name}.partial", backend.remote_root / src.name
    with fm.session(order, ascp_path=backend.ascp_path) as s:
        s.start()
        # past the first 512 KiB piece, which is what a resume can keep
        assert wait_until(lambda: partial.exists() and partial.stat().st_size > 700_000, 20)
        assert not landed.exists()
        s.cancel()
        assert s.finish().failed()
    assert partial.exists() and not landed.exists()
    assert 0 < partial.stat().st_size < SIZE or sha256(partial) != sha256(src)
    options = backend.options(destination_root=backend.upload_root(), resume_check=fm.ResumeCheck.SPARSE_CHECKSUM)
    with fm.session(fm.FileUpload(str(src), **backend.up(options=options)), ascp_path=backend.ascp_path) as s:
        s.start()
        result = s.finish()
        assert result.ok(), result.reason()
    assert landed.stat().st_size == SIZE and sha256(landed) == sha256(src)
    assert not partial.exists()
    assert result.stats()["transfer_bytes"] < SIZE  # resumed, not sent again whole
