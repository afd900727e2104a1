"""The management port (-M) against a tiny listener built on faspmanager.mgmt: events, RATE, CANCEL,
persistent START/DONE, stream PUT/WRITE/CLOSE, and a manager that disappears."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from tests.engine.helpers import remote, server_mode_pids
from tests.support.files import assert_same_file, random_file, sha256
from tests.support.wait import wait_until


def _args(server, listener, *more: str) -> list[str]:
    return ["-q", "-P", str(server.port), "-M", str(listener.port), *more]


def _finish(proc, timeout: float = 60) -> int:
    proc.wait(timeout)
    return proc.returncode


@pytest.mark.timeout(60)
def test_events_in_order_with_checksums(fasp_server_module, tmp_path, listener, spawn):
    server = fasp_server_module
    a = random_file(tmp_path / "src" / "a.bin", 300_000)
    b = random_file(tmp_path / "src" / "b.bin", 5)
    proc = spawn(
        _args(
            server,
            listener,
            "-d",
            "--file-checksum=sha256",
            "--precalculate-job-size",
            str(a),
            str(b),
            remote(server, "/events"),
        ),
        server.env(),
    )
    assert _finish(proc) == 0, proc.stderr.read().decode()
    assert listener.wait_for(lambda f: f.type == "DONE", 10)
    types = [t for t in listener.types() if t != "STATS"]
    assert types[:3] == ["INIT", "SESSION", "NOTIFICATION"]
    assert types[-1] == "DONE"
    assert types.count("START") == 2 and types.count("STOP") == 2 and types.count("ARGSTOP") == 2
    for stop in listener.of("STOP"):
        path = stop.get("File")
        assert stop.get("FileChecksumType") == "sha256"
        assert stop.get("FileChecksum") == sha256(path)
    session = listener.of("SESSION")[0]  # the size in use (path MTU discovery starts at 1200), not -Z's 0
    assert session.int("DatagramSize") >= 1200 and session.int("PMTU") == session.int("DatagramSize") + 28
    note = listener.of("NOTIFICATION")[0]
    assert note.int("PreTransferFiles") == 2 and note.int("PreTransferBytes") == 300_005
    done = listener.of("DONE")[0]
    assert done.int("TransfersPassed") == 2 and done.int("TransferBytes") == 300_005
    assert len({f.get("SessionId") for _, f in listener.events}) == 1
    assert_same_file(a, server.docroot / "events" / "a.bin")
    assert_same_file(b, server.docroot / "events" / "b.bin")


def _stats_after(listener, since: float, predicate, timeout: float):
    return listener.wait_for(lambda f: f.type == "STATS" and predicate(f), timeout, since=since)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_rate_change_shows_in_stats_within_a_second(fasp_server_module, tmp_path, listener, spawn, direction):
    server = fasp_server_module
    size = 40 << 20
    if direction == "upload":
        src = random_file(tmp_path / "rate.bin", size)
        paths = [str(src), remote(server, "/rate-up.bin")]
    else:
        src = random_file(server.docroot / "rate-down.bin", size)
        paths = [remote(server, "/rate-down.bin"), str(tmp_path / "rate-down.bin")]
    proc = spawn(_args(server, listener, "-l", "100000", "--policy=fixed", *paths), server.env())
    assert listener.wait_for(lambda f: f.type == "STATS" and f.int("TransferBytes") > (2 << 20), 30)
    sent = time.monotonic()
    listener.send("RATE", {"Rate": 20000})
    hit = _stats_after(listener, sent, lambda f: f.int("TargetRate") == 20000, 1.0)
    assert hit is not None and hit[0] - sent < 1.0
    # and the bytes really slow down: a later STATS interval measures well under the old 100 Mb/s
    slow = _stats_after(listener, sent + 1.0, lambda f: f.int("Rate") < 40000, 4.0)
    assert slow is not None, [f.int("Rate") for f in listener.of("STATS")]
    listener.send("RATE", {"Rate": 1000000})
    assert _finish(proc, 60) == 0, proc.stderr.read().decode()
    out = server.docroot / "rate-up.bin" if direction == "upload" else tmp_path / "rate-down.bin"
    assert_same_file(src, out)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_cancel_ends_with_error_28_fast_and_no_process_left(fasp_server, tmp_path, listener, spawn, direction):
    server = fasp_server
    if direction == "upload":
        src = random_file(tmp_path / "cancel.bin", 30 << 20)
        paths = [str(src), remote(server, "/cancel.bin")]
    else:
        random_file(server.docroot / "cancel.bin", 30 << 20)
        paths = [remote(server, "/cancel.bin"), str(tmp_path / "cancel.bin")]
    proc = spawn(_args(server, listener, "-l", "20000", *paths), server.env())
    assert listener.wait_for(lambda f: f.type == "STATS" and f.int("TransferBytes") > 0, 30)
    assert server_mode_pids(str(server.docroot))
    sent = time.monotonic()
    listener.send("CANCEL")
    hit = listener.wait_for(lambda f: f.type == "ERROR", 2.0)
    assert hit is not None and hit[0] - sent < 1.0
    assert hit[1].int("Code") == 28
    assert "DONE" not in listener.types()
    proc.wait(5)
    assert proc.returncode != 0
    assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 5)


@pytest.mark.timeout(60)
def test_manager_gone_stops_the_session(fasp_server, tmp_path, listener, spawn):
    server = fasp_server
    src = random_file(tmp_path / "orphan.bin", 30 << 20)
    proc = spawn(_args(server, listener, "-l", "20000", str(src), remote(server, "/orphan.bin")), server.env())
    assert listener.wait_for(lambda f: f.type == "STATS" and f.int("TransferBytes") > 0, 30)
    listener.drop()
    dropped = time.monotonic()
    proc.wait(5)
    assert time.monotonic() - dropped < 5
    assert proc.returncode != 0
    assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 5)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_persistent_session_hundred_files_by_start(fasp_server_module, tmp_path, listener, spawn, direction):
    server = fasp_server_module
    local = tmp_path / "persist"
    if direction == "upload":
        files = [random_file(local / f"p{i}.dat", 1000 + i * 100) for i in range(100)]
        dest_root = server.docroot / "persist-up"
        dest_root.mkdir()
        args = _args(
            server, listener, "--keepalive", "--mode=send", "--host", server.host, "--user", server.user, "/persist-up"
        )
        sources = [str(f) for f in files]
    else:
        remote_dir = server.docroot / "persist-src"
        files = [random_file(remote_dir / f"p{i}.dat", 1000 + i * 100) for i in range(100)]
        dest_root = local
        local.mkdir()
        args = _args(
            server, listener, "--keepalive", "--mode=recv", "--host", server.host, "--user", server.user, str(local)
        )
        sources = [f"/persist-src/p{i}.dat" for i in range(100)]
    proc = spawn(args, server.env())
    assert listener.wait_for(lambda f: f.type == "SESSION", 30)
    for i, source in enumerate(sources):
        listener.send("START", {"Source": source, "Destination": f"sub/q{i}.dat"})
    listener.send("DONE")
    assert _finish(proc) == 0, proc.stderr.read().decode()
    assert len(listener.of("STOP")) == 100
    assert listener.of("DONE")[0].int("TransfersPassed") == 100
    for i, f in enumerate(files):
        assert_same_file(f, dest_root / "sub" / f"q{i}.dat")


@pytest.mark.timeout(60)
def test_persistent_start_with_byte_ranges(fasp_server_module, tmp_path, listener, spawn):
    server = fasp_server_module
    src = random_file(tmp_path / "ranged.bin", 3_000_000)
    proc = spawn(
        _args(server, listener, "--keepalive", "--mode=send", "--host", server.host, "--user", server.user, "/"),
        server.env(),
    )
    assert listener.wait_for(lambda f: f.type == "SESSION", 30)
    for start, end in ((2_000_000, 3_000_000), (0, 1_000_000), (1_000_000, 2_000_000)):
        listener.send("START", {"Source": str(src), "Destination": "ranged.bin", "StartByte": start, "EndByte": end})
    listener.send("DONE")
    assert _finish(proc) == 0, proc.stderr.read().decode()
    assert_same_file(src, server.docroot / "ranged.bin")


@pytest.mark.timeout(120)
def test_stream_upload_hundred_mib_in_order(fasp_server_module, tmp_path, listener, spawn):
    server = fasp_server_module
    proc = spawn(
        _args(server, listener, "--keepalive", "--mode=send", "--host", server.host, "--user", server.user, "/"),
        server.env(),
    )
    assert listener.wait_for(lambda f: f.type == "SESSION", 30)
    digest = hashlib.sha256()
    listener.send("PUT", {"Destination": "streamed.bin"})
    block = os.urandom(1 << 20)
    for i in range(100):
        chunk = block[i:] + block[:i]  # every MiB distinct, so misordering would show
        for piece in (chunk[:300_000], chunk[300_000:]):  # uneven WRITE sizes
            listener.send("WRITE", payload=piece)
            digest.update(piece)
    listener.send("CLOSE")
    listener.send("DONE")
    assert _finish(proc, 100) == 0, proc.stderr.read().decode()
    out = server.docroot / "streamed.bin"
    assert out.stat().st_size == 100 << 20
    assert sha256(out) == digest.hexdigest()
    assert listener.of("STOP")[0].int("Size") == 100 << 20


@pytest.mark.timeout(60)
def test_a_failed_file_does_not_stop_the_others(fasp_server_module, tmp_path, listener, spawn):
    """FILEERROR for the missing source, the other still arrives, ARGSTOP per argument, then ERROR 27."""
    server = fasp_server_module
    good = random_file(tmp_path / "good.bin", 50_000)
    proc = spawn(
        _args(server, listener, "-d", str(tmp_path / "missing.bin"), str(good), remote(server, "/mixed")), server.env()
    )
    assert _finish(proc) == 27
    assert_same_file(good, server.docroot / "mixed" / "good.bin")
    [fileerror] = listener.of("FILEERROR")
    assert fileerror.int("Code") == 4 and fileerror.int("FaspFileArgIndex") == 0
    argstops = {f.int("FaspFileArgIndex"): f for f in listener.of("ARGSTOP")}
    assert argstops[0].int("ArgTransfersFailed") == 1 and argstops[1].int("ArgTransfersPassed") == 1
    assert listener.types()[-1] == "ERROR" and listener.of("ERROR")[0].int("Code") == 27


@pytest.mark.timeout(60)
def test_server_rate_cap_bounds_every_rate(tmp_path, listener, spawn):
    """fasp-server --rate-cap: the session starts capped and a RATE above the cap is capped too."""
    from tests.support.servers import start_fasp_server

    with start_fasp_server(tmp_path / "srv", rate_cap_kbps=30000) as server:
        src = random_file(tmp_path / "capped.bin", 12 << 20)
        proc = spawn(_args(server, listener, "-l", "500000", str(src), remote(server, "/capped.bin")), server.env())
        session = listener.wait_for(lambda f: f.type == "SESSION", 30)
        assert session is not None and session[1].int("Rate") == 30000
        sent = time.monotonic()
        listener.send("RATE", {"Rate": 400000})
        assert listener.wait_for(lambda f: f.type == "STATS" and f.int("TargetRate") == 30000, 2, since=sent + 0.6)
        assert _finish(proc) == 0, proc.stderr.read().decode()
        assert_same_file(src, server.docroot / "capped.bin")
