"""How sessions fail: programs that die, never connect, exit early, lie, or report errors (stand-in only)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

import faspmanager as fm
from faspmanager.orders import FILE_LIST_THRESHOLD
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)


def _upload(tmp_path, sources, **options):
    remote = tmp_path / "remote"
    remote.mkdir(exist_ok=True)
    return fm.FileUpload(
        [str(p) for p in sources],
        "tester",
        "127.0.0.1",
        dest_pass="pw",
        options=fm.TransferOptions(destination_root=str(remote), **options),
    )


def test_program_dying_without_done_fails_with_status_and_stderr(fake_ascp, sample_files, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEASCP_MODE", "die")
    events = []
    with fm.session(_upload(tmp_path, sample_files), ascp_path=str(fake_ascp), listener=events.append) as s:
        s.start()
        result = s.finish()
        assert result.failed() and s.state() == fm.SessionState.FAILED
        assert "status 3" in result.reason() and "simulated crash" in result.reason()
        assert result.stats()["exit_status"] == 3
        assert s.finish() is result
    assert [e.event_type for e in events] == [
        fm.TransferEventType.INIT,
        fm.TransferEventType.SESSION,
        fm.TransferEventType.ERROR,
    ]
    assert events[-1].session_stats == result.stats()  # the library's verdict, heard as the program's ERROR is


@pytest.mark.slow
def test_program_that_never_connects_is_a_bounded_start_error(fake_ascp, sample_files, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEASCP_MODE", "noconnect")
    s = fm.session(_upload(tmp_path, sample_files), ascp_path=str(fake_ascp))
    s.start_timeout = 1.0
    began = time.monotonic()
    with s, pytest.raises(fm.SessionStartError, match="did not connect"):
        s.start()
    assert time.monotonic() - began < 10
    assert s._process.poll() is not None  # the silent program was ended
    assert s.finish().failed()


def test_start_timeout_comes_from_the_environment(fake_ascp, sample_files, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEASCP_MODE", "noconnect")
    monkeypatch.setenv("FASPMANAGER_START_TIMEOUT", "0.5")
    began = time.monotonic()
    with fm.session(_upload(tmp_path, sample_files), ascp_path=str(fake_ascp)) as s:
        with pytest.raises(fm.SessionStartError, match="within 0.5 s"):
            s.start()
    assert time.monotonic() - began < 8


def test_program_exiting_before_connecting_fails_fast(fake_ascp, sample_files, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEASCP_MODE", "exit")
    s = fm.session(_upload(tmp_path, sample_files), ascp_path=str(fake_ascp))
    began = time.monotonic()
    with s, pytest.raises(fm.SessionStartError, match=r"status 2.*refusing to start"):
        s.start()
    assert time.monotonic() - began < 5  # well before the 15 s connect bound
    assert not Path(s._workdir).exists()
    with pytest.raises(fm.SessionStateError):
        s.start()


def test_error_event_fails_with_its_code_and_description(fake_ascp, sample_files, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEASCP_MODE", "error")
    events = []
    with fm.session(_upload(tmp_path, sample_files), ascp_path=str(fake_ascp), listener=events.append) as s:
        s.start()
        result = s.finish()
    assert result.failed() and result.reason() == "Authentication failed"
    assert result.stats()["code"] == 19
    assert [e.event_type for e in events] == [fm.TransferEventType.INIT, fm.TransferEventType.ERROR]


def test_protocol_garbage_fails_the_session_and_ends_the_program(fake_ascp, sample_files, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEASCP_MODE", "garbage")
    events = []
    with fm.session(_upload(tmp_path, sample_files), ascp_path=str(fake_ascp), listener=events.append) as s:
        s.start()
        result = s.finish()
        assert result.failed() and "management protocol" in result.reason()
        assert s._process.wait(10) is not None
    assert [e.event_type for e in events] == [fm.TransferEventType.ERROR]
    assert events[0].session_stats["state"] == fm.SessionState.FAILED


def test_skipped_and_failed_files(fake_ascp, sample_files, tmp_path):
    missing = tmp_path / "src" / "missing.bin"
    order = _upload(tmp_path, [*sample_files, missing], exclude_patterns=["*.txt"])
    with fm.session(order, ascp_path=str(fake_ascp)) as s:
        s.start()
        result = s.finish()
        states = {Path(name).name: stats["state"] for name, stats in s.file_stats().items()}
    assert states == {
        "a.bin": fm.FileState.FINISHED,
        "b.txt": fm.FileState.SKIPPED,
        "empty": fm.FileState.FINISHED,
        "missing.bin": fm.FileState.FAILED,
    }
    assert [Path(n).name for n in result.failed_files()] == ["missing.bin"]
    assert result.failed() and result.stats()["code"] == 27
    failed = s.file_stats(result.failed_files()[0])
    assert failed["error"] == 4 and "No such file" in failed["description"]


def test_many_sources_go_through_a_file_list_removed_when_the_program_ends(fake_ascp, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    sources = []
    for i in range(FILE_LIST_THRESHOLD + 1):
        path = src / f"f{i:04d}"
        path.write_bytes(b"%d" % i)
        sources.append(path)
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKEASCP_RECORD", str(record))
    s = fm.session(_upload(tmp_path, sources), ascp_path=str(fake_ascp))
    s.start()
    argv = json.loads(record.read_text())["argv"]
    (listed,) = [a.split("=", 1)[1] for a in argv if a.startswith("--file-list=")]
    assert Path(listed).read_text().splitlines() == [str(p) for p in sources]
    assert not any(str(p) in argv for p in sources)
    assert s.finish().ok()
    s._reader.join(10)  # the reader reaps the program, then removes its files: no close() needed
    assert not Path(listed).exists() and not Path(s._workdir).exists()
    s.close()
    assert all((tmp_path / "remote" / p.name).read_bytes() == p.read_bytes() for p in sources)


@pytest.mark.slow
def test_mgmt_port_listens_on_loopback_only_and_is_passed_with_M(fake_ascp, sample_files, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEASCP_MODE", "noconnect")
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKEASCP_RECORD", str(record))
    s = fm.session(_upload(tmp_path, sample_files), ascp_path=str(fake_ascp))
    s.start_timeout = 3.0
    outcome = []

    def start():
        try:
            s.start()
        except fm.SessionStartError as exc:
            outcome.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    try:
        assert wait_until(lambda: record.exists() and record.read_text(), 10, 0.02)
        argv = json.loads(record.read_text())["argv"]
        port = int(argv[argv.index("-M") + 1])
        assert port == s.port and argv[:2] == ["-M", str(port)]
        listening = [
            line.split()[1]
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if line.split()[3] == "0A" and line.split()[1].endswith(f":{port:04X}")
        ]
        assert listening == [f"0100007F:{port:04X}"]
        assert not any(
            line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
            for line in Path("/proc/net/tcp6").read_text().splitlines()[1:]
        )
    finally:
        starter.join()
        s.close()
    assert len(outcome) == 1


def test_listener_exceptions_do_not_stop_events(fake_ascp, sample_files, tmp_path):
    seen = []

    def flaky(event):
        seen.append(event.event_type)
        raise RuntimeError("listener bug")

    with fm.session(_upload(tmp_path, sample_files), ascp_path=str(fake_ascp), listener=flaky) as s:
        s.start()
        assert s.finish().ok()
    assert seen[-1] == fm.TransferEventType.DONE


def test_secret_fields_a_program_sends_are_dropped(fake_ascp, sample_files, tmp_path):
    events = []
    order = _upload(tmp_path, sample_files, token="tok-SECRET")
    with fm.session(order, ascp_path=str(fake_ascp), listener=events.append) as s:
        s.start()
        s.finish()
        assert "token" not in s.stats()
    assert all("tok-SECRET" not in repr(e.session_stats) for e in events)


def test_close_before_start_and_start_after_close(fake_ascp, sample_files, tmp_path):
    s = fm.session(_upload(tmp_path, sample_files), ascp_path=str(fake_ascp))
    s.close()
    s.close()
    with pytest.raises(fm.SessionStateError):
        s.start()


def test_session_factory_rejects_non_orders():
    with pytest.raises(RuntimeError):
        fm.session(order="not an order")
    # the bare base class names no transfer: refused here, not as a bare NotImplementedError out of start()
    with pytest.raises(RuntimeError, match="BaseTransferOrder subclass"):
        fm.session(order=fm.BaseTransferOrder())
    with pytest.raises(TypeError, match="BaseTransferOrder subclass"):
        fm.Session(fm.BaseTransferOrder())


def test_each_session_class_refuses_the_orders_of_another(tmp_path):
    """Session on a keepalive order ran a program nobody ever sent DONE to: finish() blocked forever."""
    persistent = fm.PersistentUpload("u", "h", dest_pass="pw")
    stream = fm.StreamUpload("u", "h", dest_pass="pw")
    plain = _upload(tmp_path, [tmp_path / "a.bin"])
    for session_class, order, wanted in (
        (fm.Session, persistent, "PersistentSession"),
        (fm.Session, stream, "StreamSession"),
        (fm.PersistentSession, plain, "Session"),
        (fm.PersistentSession, stream, "StreamSession"),
        (fm.StreamSession, persistent, "PersistentSession"),
        (fm.StreamSession, plain, "Session"),
    ):
        more = (1000,) if session_class is fm.StreamSession else ()
        with pytest.raises(TypeError, match=rf"use {wanted} \(or faspmanager\.session\(\)"):
            session_class(order, *more)
    assert type(fm.session(persistent)) is fm.PersistentSession and type(fm.session(stream)) is fm.StreamSession


def test_bad_explicit_program_is_file_not_found(sample_files, tmp_path):
    s = fm.session(_upload(tmp_path, sample_files), ascp_path=str(tmp_path / "no-such-ascp"))
    with pytest.raises(FileNotFoundError):
        s.start()
    s.close()
    assert os.listdir(tmp_path / "remote") == []


def test_explicit_port_and_parallel_sessions(fake_ascp, tmp_path):
    from tests.support.ports import free_port

    port = free_port()
    sessions = []
    for i in range(3):
        source = tmp_path / f"s{i}.bin"
        source.write_bytes(os.urandom(50_000 + i))
        remote = tmp_path / f"remote{i}"
        remote.mkdir()
        order = fm.FileUpload(
            str(source), "u", "127.0.0.1", dest_pass="pw", options=fm.TransferOptions(destination_root=str(remote))
        )
        sessions.append((fm.session(order, ascp_path=str(fake_ascp), port=port if i == 0 else 0), source, remote))
    try:
        for s, _, _ in sessions:
            s.start()
        assert sessions[0][0].port == port and len({s.port for s, _, _ in sessions}) == 3
        for s, source, remote in sessions:
            assert s.finish().ok()
            assert (remote / source.name).read_bytes() == source.read_bytes()
    finally:
        for s, _, _ in sessions:
            s.close()


def test_a_stuck_listener_costs_bounded_memory_and_loses_no_milestones(fake_ascp, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEASCP_MODE", "slow")  # one STATS per 64 KiB
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2_000_000))
    release = threading.Event()
    seen = []

    def stuck(event):
        release.wait(30)
        seen.append(event.event_type)

    s = fm.session(_upload(tmp_path, [big]), ascp_path=str(fake_ascp), listener=stuck)
    s.max_pending_stats = 3
    with s:
        s.start()
        assert s.finish().ok()
        assert s._events.qsize() <= 3 + 5  # a few STATS plus INIT, SESSION, STOP, DONE, end marker
        release.set()
    types = [t for t in seen if t != fm.TransferEventType.STATS]
    assert types == ["INIT", "SESSION", "STOP", "DONE"]
    assert 1 <= seen.count(fm.TransferEventType.STATS) <= 4


def test_add_source_refuses_bad_input_and_the_session_goes_on(fake_ascp, sample_files, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    order = fm.PersistentUpload(
        "u", "127.0.0.1", dest_pass="pw", options=fm.TransferOptions(destination_root=str(remote))
    )
    with fm.session(order, ascp_path=str(fake_ascp)) as s:
        s.start()
        with pytest.raises(fm.InvalidPathError):
            s.add_source("bad\nname", "x")
        with pytest.raises(ValueError):
            s.add_source(str(sample_files[0]), "x", start_offset=10, end_offset=5)
        with pytest.raises(ValueError):
            s.add_source(str(sample_files[0]), "x", start_offset=-1)
        s.add_source(sample_files[1], "good.txt")  # path-like sources are fine
        assert s.finish().ok()
    assert (remote / "good.txt").read_bytes() == sample_files[1].read_bytes()
    assert not (remote / "x").exists()
