"""Issue 10, item 8: another local process races the transfer program to the library's management port.

The attacker is a separate process (not in the session's process tree), as another local user would be: it
watches /proc for the spawned program, reads the port from its command line (``-M PORT``, visible in
/proc/PID/cmdline), connects first and speaks FASPMGR 2 — a forged INIT and DONE, a wrong secret, or silence.
The programs connect a second late (a wrapper sleeps before exec), so the attacker always wins the race.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import faspmanager as fm
from faspmanager import admission
from faspmanager.mgmt import encode
from tests.manager.conftest import HERE as MANAGER_TESTS
from tests.support.files import sha256
from tests.support.ports import free_port
from tests.support.programs import pythonpath
from tests.support.servers import start_fasp_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
FORGED_SESSION = "forged-by-a-stranger"


def attack(marker: str, mode: str, out: str, hold: float) -> None:
    """The attacker (run as its own process): find ``marker``'s -M port in /proc, connect, speak, record."""
    Path(out + ".ready").touch()  # imported and looking: the session may start (Attacker waits for this)
    port, deadline = None, time.monotonic() + 30
    while port is None and time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(marker.encode() in a for a in argv) and b"-M" in argv:
                port = int(argv[argv.index(b"-M") + 1])
                break
        else:
            time.sleep(0.005)
    if mode in ("flood", "stream"):
        Path(out).write_text(json.dumps({"port": port, **hog(port, mode, hold)}))
        return
    sock = socket.create_connection(("127.0.0.1", port))
    wire = b""
    if mode == "wrong-secret":
        wire += encode("AUTH", {"Secret": os.urandom(32).hex()})  # mgmt.AUTH_FRAME, spelt out: a stranger's view
    if mode != "silent":
        wire += encode("INIT", {"SessionId": FORGED_SESSION, "Direction": "Send", "Host": "x", "User": "x"})
    if mode in ("forge", "wrong-secret"):
        wire += encode(
            "DONE",
            {
                "SessionId": FORGED_SESSION,
                "TransfersAttempted": 1,
                "TransfersPassed": 1,
                "TransferBytes": 1,
                "FileBytes": 1,
            },
        )
    sock.sendall(wire)
    sock.settimeout(0.2)
    received, dropped, end = b"", False, time.monotonic() + hold
    while time.monotonic() < end and not dropped:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            data = b""
        received += data
        dropped = not data
    Path(out).write_text(json.dumps({"port": port, "received": received.decode("latin-1"), "dropped": dropped}))


def hog(port: int, mode: str, hold: float) -> dict:
    """Try to hold the listener: many silent connections at once, or one endless header line.

    Reports whether the library dropped every connection and the longest any was held."""
    count = 30 if mode == "flood" else 1
    began = time.monotonic()
    socks, held, sent = [], {}, 0
    for i in range(count):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=hold))
        except OSError:  # refused: the listener is gone, nothing left to hold
            held[i] = time.monotonic() - began
            socks.append(None)
    for sock in filter(None, socks):
        sock.settimeout(0.05)
    while len(held) < count and time.monotonic() - began < hold:
        for i, sock in enumerate(socks):
            if i in held:
                continue
            try:
                if mode == "stream":
                    sent += sock.send(b"X" * 65536)  # no newline: a header that never ends
                elif sock.recv(1) == b"":
                    held[i] = time.monotonic() - began
            except TimeoutError:
                continue
            except OSError:
                held[i] = time.monotonic() - began
    return {"dropped": len(held) == count, "held": max(held.values(), default=hold), "received": "", "sent": sent}


class Attacker:
    def __init__(self, tmp_path: Path, marker: str, mode: str, hold: float = 8.0):
        self.out = tmp_path / f"attacker-{mode}.json"
        code = (
            "import sys; from tests.security.test_mgmt_port import attack; attack(*sys.argv[1:4], float(sys.argv[4]))"
        )
        env = {**os.environ, "PYTHONPATH": pythonpath()}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, marker, mode, str(self.out), str(hold)],
            env=env,
            start_new_session=True,
            stderr=subprocess.PIPE,
        )
        # the engine waits a second before it connects; an attacker still importing when the session started
        # (a loaded CI host) found the port after the engine took it, and was refused
        ready, deadline = Path(f"{self.out}.ready"), time.monotonic() + 30
        while not ready.exists() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def result(self) -> dict:
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err.decode(errors="replace")
        return json.loads(self.out.read_text())


def _late(tmp_path: Path, name: str, command: str) -> Path:
    """A program named ``name`` that connects a second late: the stranger gets there first."""
    program = tmp_path / name
    program.write_text(f'#!/bin/sh\nsleep 1\n{command} "$@"\n')
    program.chmod(0o755)
    return program


@pytest.fixture
def server(tmp_path):
    with start_fasp_server(tmp_path / "fasp-server") as srv:
        yield srv


def _upload(server, source: Path, **options) -> fm.FileUpload:
    options = fm.TransferOptions(
        destination_root="/", tcp_port=server.port, udp_port=free_port(socket.SOCK_DGRAM), **options
    )
    return fm.FileUpload([str(source)], server.user, server.host, dest_pass=server.password, options=options)


def _source(tmp_path: Path, size: int) -> Path:
    source = tmp_path / "src" / "payload.bin"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(os.urandom(size))
    return source


@pytest.mark.parametrize("mode", ["forge", "wrong-secret"])
def test_a_stranger_forging_init_and_done_first_does_not_make_the_session(tmp_path, server, mode, caplog):
    engine = _late(
        tmp_path,
        "fasp-ascp",
        f'printenv FASPMANAGER_MGMT_SECRET > "{tmp_path}/secret"\nexec "{sys.executable}" -m fasp',
    )
    source = _source(tmp_path, 300_000)
    attacker = Attacker(tmp_path, str(engine), mode)
    events = []
    with fm.session(_upload(server, source), ascp_path=str(engine), listener=events.append) as s:
        s.start()
        result = s.finish()
        stats = s.stats()
    seen = attacker.result()
    secret = (tmp_path / "secret").read_text().strip()  # as the engine got it (it blanks /proc/PID/environ)
    assert len(secret) >= 16
    assert "dropped the connection" in caplog.text and secret not in caplog.text
    assert not any(secret in repr(e.session_stats) for e in events) and secret not in repr(stats)
    assert seen["port"] == s.port
    assert stats.get("session_id") != FORGED_SESSION, "the stranger's INIT/DONE were taken as the session's"
    assert result.ok(), result.reason()
    landed = server.docroot / source.name
    assert landed.stat().st_size == source.stat().st_size and sha256(landed) == sha256(source)
    assert seen["dropped"] and seen["received"] == ""


def test_rate_and_cancel_never_reach_a_stranger(tmp_path, server):
    engine = _late(tmp_path, "fasp-ascp", f'exec "{sys.executable}" -m fasp')
    source = _source(tmp_path, 4_000_000)
    attacker = Attacker(tmp_path, str(engine), "hold", hold=6.0)
    order = _upload(server, source, target_rate_kbps=2000, policy=fm.TransferPolicy.FIXED)
    with fm.session(order, ascp_path=str(engine)) as s:
        s.start()
        assert s.set_rate(1500)
        time.sleep(0.5)
        assert s.cancel()
        result = s.finish()
    seen = attacker.result()
    assert "RATE" not in seen["received"] and "CANCEL" not in seen["received"], seen["received"]
    assert seen["received"] == "" and seen["dropped"]
    assert result.failed() and result.stats().get("code") == 28, result.reason()  # the real engine obeyed


@pytest.fixture
def ibm_like(tmp_path, monkeypatch):
    """The IBM-like stand-in (no secret) behind a late wrapper; ``descendant`` keeps the shell as its parent."""
    monkeypatch.setenv("PYTHONPATH", pythonpath())
    monkeypatch.setenv("FAKEASCP_MODE", "normal")
    fake = f'"{sys.executable}" "{MANAGER_TESTS / "fakeascp.py"}"'
    return lambda how: _late(tmp_path, f"ibm-ascp-{how}", f"exec {fake}" if how == "child" else fake)


@pytest.mark.parametrize("how", ["child", "descendant"])
@pytest.mark.parametrize("mode", ["forge", "silent"])
def test_a_program_without_secret_is_admitted_from_its_process_tree_and_a_stranger_is_not(
    tmp_path, ibm_like, how, mode
):
    program = ibm_like(how)
    source = _source(tmp_path, 200_000)
    remote = tmp_path / "remote"
    remote.mkdir()
    order = fm.FileUpload(
        [str(source)], "u", "127.0.0.1", dest_pass="pw", options=fm.TransferOptions(destination_root=str(remote))
    )
    attacker = Attacker(tmp_path, str(program), mode, hold=5.0)
    with fm.session(order, ascp_path=str(program)) as s:
        s.start()
        result = s.finish()
        stats = s.stats()
    seen = attacker.result()
    assert stats.get("session_id") == "fake-1" and result.ok(), (stats.get("session_id"), result.reason())
    assert sha256(remote / source.name) == sha256(source)
    assert seen["dropped"] and seen["received"] == ""


def test_a_program_that_knows_no_secret_is_not_handed_one(tmp_path, monkeypatch):
    """IBM's ascp would keep the secret in its /proc environ for any process of the user to read (and present):
    only our engine gets it."""
    monkeypatch.setenv("PYTHONPATH", pythonpath())
    monkeypatch.setenv("FAKEASCP_MODE", "normal")
    record = tmp_path / "env.txt"
    program = tmp_path / "ascp"
    program.write_text(
        f'#!/bin/sh\necho "${{FASPMANAGER_MGMT_SECRET:-none}}" > "{record}"\n'
        f'exec "{sys.executable}" "{MANAGER_TESTS / "fakeascp.py"}" "$@"\n'
    )
    program.chmod(0o755)
    source = _source(tmp_path, 1000)
    remote = tmp_path / "remote"
    remote.mkdir()
    order = fm.FileUpload(
        [str(source)], "u", "127.0.0.1", dest_pass="pw", options=fm.TransferOptions(destination_root=str(remote))
    )
    with fm.session(order, ascp_path=str(program)) as s:
        s.start()
        result = s.finish()
    assert result.ok(), result.reason()
    assert record.read_text().strip() == "none"
    assert sha256(remote / source.name) == sha256(source)


def test_the_secret_never_shows_on_the_command_line_and_the_engine_keeps_it_from_its_children(tmp_path, server):
    engine = tmp_path / "fasp-ascp"
    record = tmp_path / "seen.txt"
    # the wrapper records what its environment and argv held, then runs the engine with a hook that records
    # whether the engine's children still see the variable
    engine.write_text(
        f'#!/bin/sh\necho "argv: $*" > "{record}"\necho "env: ${{FASPMANAGER_MGMT_SECRET:-}}" >> '
        f'"{record}"\nexec "{sys.executable}" -m fasp "$@"\n'
    )
    engine.chmod(0o755)
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "hook: ${{FASPMANAGER_MGMT_SECRET:-none}}" >> "{record}"\n')
    hook.chmod(0o755)
    source = _source(tmp_path, 1000)
    order = _upload(server, source, extra_options=["-e", str(hook)])
    with fm.session(order, ascp_path=str(engine)) as s:
        s.start()
        result = s.finish()
    assert result.ok(), result.reason()
    lines = dict(line.split(": ", 1) for line in record.read_text().splitlines())
    secret = lines["env"]
    assert len(secret) == 64 and secret not in lines["argv"]
    assert lines.get("hook") == "none"
    assert sha256(server.docroot / source.name) == sha256(source)


@pytest.mark.parametrize("mode", ["flood", "stream"])
def test_a_stranger_cannot_hold_the_listener(tmp_path, server, mode):
    """Thirty silent connections at once, or an endless header line: each is dropped within the first-frame
    bounds (2 s, 16 KiB) and the engine, arriving meanwhile, is admitted and transfers."""
    engine = _late(tmp_path, "fasp-ascp", f'exec "{sys.executable}" -m fasp')
    source = _source(tmp_path, 200_000)
    attacker = Attacker(tmp_path, str(engine), mode, hold=8.0)
    with fm.session(_upload(server, source), ascp_path=str(engine)) as s:
        s.start()
        result = s.finish()
    seen = attacker.result()
    assert result.ok(), result.reason()
    assert sha256(server.docroot / source.name) == sha256(source)
    assert seen["dropped"], seen
    assert seen["held"] < (1.5 if mode == "stream" else 4.0), seen  # the byte bound trips well before the time one


def test_a_connection_left_by_a_program_that_already_exited_is_dropped_saying_so(tmp_path):
    """A program that connects, writes and exits before its connection is judged leaves nothing to recognise it
    by (its sockets are closed): what it wrote is not trusted, and the reason says why rather than calling it a
    stranger's."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    forged = encode("INIT", {"SessionId": "gone"}) + encode("DONE", {})
    program = subprocess.Popen(
        [sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port})).sendall({forged!r})"]
    )
    deadline = time.monotonic() + 10
    while not admission.exited(program.pid):  # a zombie, not reaped: the same pid, no sockets
        assert time.monotonic() < deadline, "the program did not exit"
        time.sleep(0.01)
    gate = admission.Admission(server, "s" * 64, program.pid, secret_required=False)
    try:
        assert all(gate.poll(0.2) is None for _ in range(3))
        assert len(gate.dropped) == 1 and f"process {program.pid} had exited" in gate.dropped[0], gate.dropped
    finally:
        gate.close()
        server.close()
        program.wait()
