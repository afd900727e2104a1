"""Issue 10, item 10: a file whose name holds a newline (or any control character) aborted every -M session with
error 11 and left a 0-byte file. Now such names travel percent-encoded on the management port (the frame lists
them in ``EscapedFields``) and arrive intact: the files transfer, byte for byte, through faspmanager and through
a stock fasp-ascp with -M read by a hand-built manager.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

import faspmanager as fm
from faspmanager import mgmt
from tests.support.files import sha256
from tests.support.ports import free_port
from tests.support.programs import ENGINE, engine_program
from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(120)

NAMES = [
    "new\nline",
    "tab\there",
    "esc\x1b[31mred",
    "del\x7f",
    "bell\x07",
    "cr\rret",
    "literal%0Apercent",
    "nel\x85and\u2028sep",
]
"""Control characters of every kind, and a name that already looks escaped (it must stay as it is)."""


def _tree(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True)
    files = {}
    for i, name in enumerate([*NAMES, "plain.bin"]):
        path = root / name
        path.write_bytes(os.urandom(1000 + 7919 * i))
        files[name] = path
    return files


def _assert_same_tree(sources: dict[str, Path], landed: Path) -> None:
    assert sorted(p.name for p in landed.iterdir()) == sorted(sources)
    for name, source in sources.items():
        copy = landed / name
        assert copy.stat().st_size == source.stat().st_size and sha256(copy) == sha256(source), repr(name)


@pytest.fixture
def server(tmp_path):
    with start_fasp_server(tmp_path / "fasp-server") as srv:
        yield srv


@pytest.fixture
def engine(tmp_path) -> Path:
    return engine_program(tmp_path)


def _options(server, root: str) -> fm.TransferOptions:
    return fm.TransferOptions(destination_root=root, tcp_port=server.port, udp_port=free_port(socket.SOCK_DGRAM))


def _check_events(session, events, root: Path, names) -> None:
    files = session.file_stats()
    for name in names:
        stats = files[str(root / name)]  # the real name, unescaped
        assert stats["state"] == fm.FileState.FINISHED, (name, stats)
    expected = {str(root / n) for n in names}

    def reported() -> set[str]:  # the listener runs on its own thread: finish() does not wait for it
        return {e.file_stats["file"] for e in list(events) if e.event_type == fm.TransferEventType.STOP}

    assert wait_until(lambda: expected <= reported(), 10), expected - reported()


def test_upload_and_download_through_faspmanager(tmp_path, server, engine):
    sources = _tree(tmp_path / "src" / "odd")
    events = []
    order = fm.FileUpload(
        [str(tmp_path / "src" / "odd")],
        server.user,
        server.host,
        dest_pass=server.password,
        options=_options(server, "/"),
    )
    with fm.session(order, ascp_path=str(engine), listener=events.append) as s:
        s.start()
        result = s.finish()
        assert result.ok() and s.failed_files() == [], result.reason()
        _check_events(s, events, tmp_path / "src" / "odd", sources)
    _assert_same_tree(sources, server.docroot / "odd")

    local = tmp_path / "down"
    local.mkdir()
    events.clear()
    order = fm.FileDownload(
        ["/odd"], server.user, server.host, source_pass=server.password, options=_options(server, str(local))
    )
    with fm.session(order, ascp_path=str(engine), listener=events.append) as s:
        s.start()
        result = s.finish()
        assert result.ok() and s.failed_files() == [], result.reason()
        _check_events(s, events, local / "odd", sources)
    _assert_same_tree(sources, local / "odd")


def test_persistent_and_stream_paths_with_control_characters(tmp_path, server, engine):
    """Commands carry such paths too once the program proved it is ours (it presented the session secret)."""
    source = tmp_path / "one\nsource.bin"
    source.write_bytes(os.urandom(50_000))
    order = fm.PersistentUpload(server.user, server.host, dest_pass=server.password, options=_options(server, "/"))
    with fm.session(order, ascp_path=str(engine)) as s:
        s.start()
        s.add_source(str(source), "landed\nhere.bin")
        result = s.finish()
    assert result.ok(), result.reason()
    assert sha256(server.docroot / "landed\nhere.bin") == sha256(source)

    data = os.urandom(30_000)
    order = fm.StreamUpload(server.user, server.host, dest_pass=server.password, options=_options(server, "/"))
    with fm.session(order, ascp_path=str(engine)) as s:
        s.start()
        stream = s.open_stream("stream\x1bed.bin")
        stream.send(data)
        stream.close()
        result = s.finish()
    assert result.ok(), result.reason()
    assert (server.docroot / "stream\x1bed.bin").read_bytes() == data


def _run_with_manager(argv: list[str], env: dict) -> tuple[int, bytes, str]:
    """A stock fasp-ascp with -M against a hand-built manager that records the raw bytes it is sent."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [*ENGINE, "-q", "-M", str(port), *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            conn, _ = listener.accept()
            raw = b""
            with conn:
                conn.settimeout(60)
                while chunk := conn.recv(65536):
                    raw += chunk
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode, raw, err.decode(errors="replace")


def _check_wire(raw: bytes, root: Path, names) -> None:
    """Every header line is one line of printable text; decoded, the events name the real files."""
    frames = mgmt.Decoder().feed(raw)
    assert [f.type for f in frames][-1] == "DONE"
    stops = {f.get("File") for f in frames if f.type == "STOP"}
    assert {str(root / n) for n in names} <= stops
    for line in raw.split(b"\n"):
        assert not any(b < 0x20 or b == 0x7F for b in line), line
    assert b"%0A" in raw and b"EscapedFields: File" in raw
    assert b"odd/literal%0Apercent\n" in raw  # a plain value travels verbatim (IBM's parsers see it unchanged)
    assert b"odd/new%0Aline\n" in raw  # and only the escaped fields are decoded: the STOPs above name both


def test_upload_and_download_through_fasp_ascp_with_M(tmp_path, server):
    sources = _tree(tmp_path / "src" / "odd")
    target = f"{server.user}@{server.host}"
    common = ["-d", "-P", str(server.port), "-O", str(free_port(socket.SOCK_DGRAM))]
    status, raw, err = _run_with_manager([*common, str(tmp_path / "src" / "odd"), f"{target}:/m"], server.env())
    assert status == 0, err
    _check_wire(raw, tmp_path / "src" / "odd", sources)
    _assert_same_tree(sources, server.docroot / "m" / "odd")

    local = tmp_path / "down"
    local.mkdir()
    status, raw, err = _run_with_manager([*common, f"{target}:/m/odd", str(local)], server.env())
    assert status == 0, err
    _check_wire(raw, local / "odd", sources)
    _assert_same_tree(sources, local / "odd")
