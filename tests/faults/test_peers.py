"""A peer frozen, killed or cut off mid-transfer: a short fault is ridden out, a long one ends with the code for
it within the (shortened) timeouts, and a resume (-k 2) finishes with every byte right and little sent twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine.helpers import remote, server_mode_pids
from tests.faults.conftest import PEER_S, STALL_S
from tests.faults.helpers import finish, resume
from tests.support.files import assert_same_file, random_file
from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(90)
SIZE = 16 << 20
RATE_KBPS = "80000"  # 16 MiB take about 1.7 s: long enough to hit them mid-transfer
MID = 2 << 20  # bytes moved before the fault
PIECE = 512 << 10  # a resume sends at least one piece less than the file (the first landed before the fault)


def _args(server, listener, *more: str) -> list[str]:
    return ["-q", "-P", str(server.port), "-M", str(listener.port), "-l", RATE_KBPS, "-k", "2", *more]


def _start_upload(server, listener, spawn, directory: Path, name: str):
    """A SIZE-byte file of random bytes uploading at RATE_KBPS, once MID bytes have moved: (src, proc, started)."""
    src = random_file(directory / name, SIZE)
    started = time.monotonic()
    proc = spawn(_args(server, listener, str(src), remote(server, "/")), server.env())
    assert listener.wait_for(lambda f: f.type == "STATS" and f.int("TransferBytes") > MID, 20), listener.types()
    return src, proc, started


def _engine(server) -> int:
    assert wait_until(lambda: len(server_mode_pids(str(server.docroot))) == 1, 5)
    return server_mode_pids(str(server.docroot))[0]


def _freeze(pid: int, seconds: float) -> float:
    """SIGSTOP ``pid`` for ``seconds``; the moment it was frozen."""
    at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(pid, signal.SIGCONT)
    return at


def _ends(proc, started: float, since: float, codes=(16, 39), within: float = 2.0):
    """The client's outcome, which must be one of ``codes`` within ``within`` seconds of ``since``."""
    out = finish(proc, started, timeout=15)
    seconds = time.monotonic() - since
    assert out.code in codes, out
    assert seconds < within, seconds
    return out, seconds


def _resumed(row: dict, server, src: Path, dest: Path) -> None:
    """-k 2 after the fault: every byte right, not all of them sent again; the row says how much was."""
    sent = resume(server, [str(src), remote(server, "/")], src, dest, most=SIZE - PIECE)
    row["recovery"] = f"-k 2: sent {sent / SIZE:.0%} of the file, sha256 equal"


@pytest.mark.parametrize("who", ["receiver", "sender"])
def test_frozen_shorter_than_the_timeouts_is_ridden_out(fasp_server, tmp_path, listener, spawn, record, who):
    server = fasp_server
    src, proc, started = _start_upload(server, listener, spawn, tmp_path, "frozen.bin")
    pid = _engine(server) if who == "receiver" else proc.pid
    _freeze(pid, 1.0)
    out = finish(proc, started)
    assert out.code == 0, out
    assert_same_file(src, server.docroot / "frozen.bin")
    record(
        f"{who} frozen (SIGSTOP) 1 s, under the timeouts",
        f"{who}: {'server' if who == 'receiver' else 'client'}",
        0,
        "(none: the transfer finished)",
        None,
        "none needed: sha256 equal",
    )


def test_receiver_frozen_longer_than_the_stall_timeout_is_40(fasp_server, tmp_path, listener, spawn, record):
    server = fasp_server
    src, proc, started = _start_upload(server, listener, spawn, tmp_path, "stalled.bin")
    pid = _engine(server)
    frozen = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        out = finish(proc, started, timeout=STALL_S + 10)
        seconds = time.monotonic() - frozen
    finally:
        os.kill(pid, signal.SIGCONT)
    assert out.code == 40, out
    assert STALL_S - 1.5 < seconds < STALL_S + 2, seconds
    row = record(
        "receiver frozen (SIGSTOP) longer than the stall timeout", "receiver: server", out.code, out.message, seconds
    )
    assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 10)
    _resumed(row, server, src, server.docroot / "stalled.bin")


def test_sender_frozen_longer_than_the_peer_timeout(fasp_server, tmp_path, listener, spawn, record):
    """The receiver (server) gives the silent client up after the peer timeout; the client, woken, ends."""
    server = fasp_server
    src, proc, started = _start_upload(server, listener, spawn, tmp_path, "sleeper.bin")
    engine = _engine(server)
    _freeze(proc.pid, PEER_S + 1.5)
    woke = time.monotonic()
    assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 2) or engine not in server_mode_pids(
        str(server.docroot)
    )
    out, seconds = _ends(proc, started, woke, (16, 39, 40), within=3)
    row = record(
        f"sender frozen (SIGSTOP) {PEER_S + 1.5:g} s, longer than the peer timeout",
        "sender: client",
        out.code,
        out.message,
        seconds,
    )
    row["fault"] += " (seconds: after it woke)"
    _resumed(row, server, src, server.docroot / "sleeper.bin")


def test_peer_engine_killed(fasp_server, tmp_path, listener, spawn, record):
    server = fasp_server
    src, proc, started = _start_upload(server, listener, spawn, tmp_path, "killed.bin")
    killed = time.monotonic()
    os.kill(_engine(server), signal.SIGKILL)
    out, seconds = _ends(proc, started, killed)
    row = record("peer engine killed (SIGKILL)", "receiver: server", out.code, out.message, seconds)
    _resumed(row, server, src, server.docroot / "killed.bin")


def test_ssh_connection_cut(fasp_server, tmp_path, listener, spawn, record):
    """The TCP connection of the SSH session is destroyed (ss -K), both processes stay alive."""
    server = fasp_server
    src, proc, started = _start_upload(server, listener, spawn, tmp_path, "cut.bin")
    cut = time.monotonic()
    killed = subprocess.run(
        ["ss", "-K", "-t", "dst", server.host, "dport", "=", str(server.port)], capture_output=True, text=True
    )
    if killed.returncode != 0 or str(server.port) not in killed.stdout:
        pytest.skip(f"ss -K cannot destroy sockets here (kernel without INET_DIAG_DESTROY): {killed.stderr}")
    out, seconds = _ends(proc, started, cut)
    row = record("SSH connection cut (TCP socket destroyed)", "control channel", out.code, out.message, seconds)
    assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 10)  # the server engine ends too
    _resumed(row, server, src, server.docroot / "cut.bin")


def test_fasp_server_restarted(tmp_path, listener, spawn, record):
    """fasp-server killed (with its engine) and started again on the same docroot: the resume goes there."""
    docroot = tmp_path / "docroot"
    with start_fasp_server(tmp_path / "srv1", docroot=docroot) as server:
        src, proc, started = _start_upload(server, listener, spawn, tmp_path, "restart.bin")
        engine = _engine(server)
        stopped = time.monotonic()
        server.process.kill()
        out, seconds = _ends(proc, started, stopped)
    assert wait_until(lambda: not server_mode_pids(str(docroot)), 10), f"engine {engine} outlived its server"
    row = record("fasp-server killed and restarted", "server", out.code, out.message, seconds)
    with start_fasp_server(tmp_path / "srv2", docroot=docroot) as server:
        _resumed(row, server, src, docroot / "restart.bin")
    row["recovery"] = row["recovery"].replace("-k 2", "-k 2 to the new server")


def test_management_connection_dropped(fasp_server, tmp_path, listener, spawn, record):
    """The library (the manager on -M) goes away: the engine stops the session rather than run unwatched."""
    server = fasp_server
    src, proc, started = _start_upload(server, listener, spawn, tmp_path, "orphan.bin")
    listener.drop()
    dropped = time.monotonic()
    out = finish(proc, started, timeout=15)
    seconds = time.monotonic() - dropped
    assert out.code != 0 and seconds < 2, (out, seconds)
    assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 10)
    row = record("management connection dropped by the library", "client", out.code, out.message, seconds)
    _resumed(row, server, src, server.docroot / "orphan.bin")


def test_a_slow_rate_is_not_a_stall(fasp_server, tmp_path, listener, spawn, record):
    """16 pieces of a file (8 MiB) are asked for at once; at 12 Mbit/s the last waits 5 s for its turn, more than
    the stall timeout (4 s here; with the default 20 s, any rate under 3 Mbit/s): waiting is not stalling."""
    server = fasp_server
    src = random_file(tmp_path / "slow.bin", 8 << 20)
    started = time.monotonic()
    proc = spawn(
        ["-q", "-P", str(server.port), "-M", str(listener.port), "-l", "12000", str(src), remote(server, "/")],
        server.env(),
    )
    out = finish(proc, started)
    assert out.code == 0, out
    assert out.seconds > STALL_S + 1  # slow enough that the last piece waited longer than the stall timeout
    assert_same_file(src, server.docroot / "slow.bin")
    record(
        "slow link: pieces queued longer than the stall timeout (-l 12000, 8 MiB)",
        "sender: client",
        0,
        "(none: the transfer finished; it was 40 while a piece waiting its turn counted as stalled)",
        None,
        "none needed: sha256 equal",
    )
