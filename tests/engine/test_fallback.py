"""HTTP/HTTPS fallback (-y 1) with UDP really blocked: a firewall in the server's own network namespace.

The client runs in one namespace, fasp-server in another, joined by a veth pair;
nftables in the server's namespace drops every UDP packet (its counter proves the
engine tried). Every transfer checks size and sha256; SESSION names the carrier.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fasp.datapath import httpframes
from fasp.datapath.httpchannel import Registration
from fasp.server.frontdoor import FallbackPort
from faspmanager.codes import ErrorCode
from tests.support.certs import self_signed
from tests.support.files import assert_same_file, random_file
from tests.support.netns import SERVER_ADDR, Lab, udp_blocked_lab
from tests.support.ports import free_port
from tests.support.programs import REPO_ROOT, engine_program, pythonpath
from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until

HTTP_PORT = 18080  # not the default 8080: the tests pass -t, so an ignored -t fails them
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nftables"),
]


@pytest.fixture(scope="module")
def lab():
    with udp_blocked_lab() as lab:
        yield lab


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    return {
        "good": self_signed(directory, "server", SERVER_ADDR),
        "other": self_signed(directory, "stranger", SERVER_ADDR),
    }


@pytest.fixture(scope="module")
def server(lab, tmp_path_factory):
    """fasp-server in the server namespace with a plain HTTP fallback port."""
    with start_fasp_server(
        tmp_path_factory.mktemp("http-server"),
        host=SERVER_ADDR,
        wrapper=Lab.wrap(lab.server_ns, []),
        extra_args=["--http-port", str(HTTP_PORT)],
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def tls_server(lab, certs, tmp_path_factory):
    """fasp-server with an HTTPS fallback port that also wants the client's certificate (mutual TLS)."""
    cert, key = certs["good"]
    with start_fasp_server(
        tmp_path_factory.mktemp("https-server"),
        host=SERVER_ADDR,
        wrapper=Lab.wrap(lab.server_ns, []),
        extra_args=[
            "--http-port",
            str(HTTP_PORT + 1),
            "--https-cert",
            str(cert),
            "--https-key",
            str(key),
            "--https-client-ca",
            str(cert),
        ],
    ) as srv:
        yield srv


def _in_client(lab: Lab, argv: list[str], env: dict, timeout: float = 90) -> dict:
    proc = subprocess.run(
        Lab.wrap(lab.client_ns, [sys.executable, "-m", "tests.support.probe", *argv]),
        env={**env, "PYTHONPATH": pythonpath()},
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return json.loads(proc.stdout)


def _ascp(lab: Lab, srv, *args: str) -> dict:
    """Run the engine in the client namespace against ``srv``: {"rc", "stderr", "events"}."""
    return _in_client(lab, ["engine", "-P", str(srv.port), *args], srv.env())


def _event(run: dict, kind: str) -> dict:
    found = [fields for event, fields in run["events"] if event == kind]
    assert found, f"no {kind} event; events {[e for e, _ in run['events']]}; stderr {run['stderr']}"
    return found[0]


def _ok(run: dict) -> dict:
    assert run["rc"] == 0, run["stderr"]
    _event(run, "DONE")
    return _event(run, "SESSION")


def test_udp_blocked_without_fallback_fails_with_15(lab, server, tmp_path):
    source = random_file(tmp_path / "nofallback.bin", 10_000)
    dropped = lab.udp_dropped()
    run = _ascp(lab, server, str(source), f"{server.user}@{server.host}:/")
    error = _event(run, "ERROR")
    assert run["rc"] != 0 and int(error["Code"]) == ErrorCode.CONNECTION_TIMEOUT, (error, run["stderr"])
    assert lab.udp_dropped() > dropped  # the firewall, not something else, stopped it
    assert not (server.docroot / "nofallback.bin").exists()


def test_udp_stays_the_carrier_when_it_passes(fasp_server, tmp_path):
    """-y 1 only matters when UDP fails: on an open path (loopback, no firewall) SESSION says udp."""
    source = random_file(tmp_path / "open.bin", 200_000)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.probe",
            "engine",
            "-P",
            str(fasp_server.port),
            "-y",
            "1",
            "-t",
            str(HTTP_PORT),
            str(source),
            f"{fasp_server.user}@{fasp_server.host}:/",
        ],
        env={**fasp_server.env(), "PYTHONPATH": pythonpath()},
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=90,
    )
    assert _ok(json.loads(proc.stdout))["Transport"] == "udp"
    assert_same_file(source, fasp_server.docroot / "open.bin")


def test_http_fallback_upload_and_download(lab, server, tmp_path):
    source = random_file(tmp_path / "up.bin", 3_000_000)
    dropped = lab.udp_dropped()
    run = _ascp(lab, server, "-y", "1", "-t", str(HTTP_PORT), str(source), f"{server.user}@{server.host}:/")
    session = _ok(run)
    assert (session["Transport"], int(session["Port"])) == ("http", HTTP_PORT)
    assert lab.udp_dropped() > dropped  # UDP was tried first, and the firewall took it
    assert_same_file(source, server.docroot / "up.bin")

    remote = random_file(server.docroot / "down.bin", 2_500_000)
    dest = tmp_path / "dl"
    dest.mkdir()
    run = _ascp(lab, server, "-y", "1", "-t", str(HTTP_PORT), f"{server.user}@{server.host}:/down.bin", str(dest))
    assert _ok(run)["Transport"] == "http"
    assert_same_file(remote, dest / "down.bin")


def test_https_fallback_verifies_both_certificates(lab, tls_server, certs, tmp_path):
    """-I is what the server's certificate must verify against, and with -Y (its key) our client certificate."""
    source = random_file(tmp_path / "tls.bin", 1_500_000)
    cert, key = certs["good"]
    tls = ["-y", "1", "-t", str(HTTP_PORT + 1)]
    run = _ascp(
        lab, tls_server, *tls, "-I", str(cert), "-Y", str(key), str(source), f"{tls_server.user}@{tls_server.host}:/"
    )
    assert _ok(run)["Transport"] == "https"
    assert_same_file(source, tls_server.docroot / "tls.bin")

    for name, flags, needle in (
        ("stranger", ["-I", str(certs["other"][0])], "certificate"),
        ("anonymous", ["-I", str(cert)], ""),
    ):  # no -Y: no client certificate
        run = _ascp(lab, tls_server, *tls, *flags, str(source), f"{tls_server.user}@{tls_server.host}:/{name}.bin")
        error = _event(run, "ERROR")
        assert int(error["Code"]) == ErrorCode.CONNECTION_ERROR_HTTP, error
        assert needle in error["Description"]
        assert not (tls_server.docroot / f"{name}.bin").exists()


def test_fallback_to_a_server_without_one_fails_with_47(lab, tmp_path):
    """fasp-server without --http-port: its engine refuses the fallback request, and the client says why."""
    source = random_file(tmp_path / "noport.bin", 10_000)
    with start_fasp_server(tmp_path / "plain-server", host=SERVER_ADDR, wrapper=Lab.wrap(lab.server_ns, [])) as srv:
        run = _ascp(lab, srv, "-y", "1", "-t", str(HTTP_PORT), str(source), f"{srv.user}@{srv.host}:/")
        error = _event(run, "ERROR")
        assert int(error["Code"]) == ErrorCode.CONNECTION_ERROR_HTTP
        assert "no HTTP fallback" in error["Description"]
        assert not (srv.docroot / "noport.bin").exists()


def test_fasp_server_refuses_unknown_sessions_and_bad_requests(lab, server):
    script = (
        "import socket, sys\n"
        "def ask(raw):\n"
        f"    s = socket.create_connection(('{SERVER_ADDR}', {HTTP_PORT}), timeout=10); s.sendall(raw)\n"
        "    out = b''\n"
        "    while chunk := s.recv(4096): out += chunk\n"
        "    return out.split(b'\\r\\n')[0].decode()\n"
        f"print(ask({httpframes.request('ab' * 16, 'secret-token-' + 'x' * 32, SERVER_ADDR, HTTP_PORT, False)!r}))\n"
        "print(ask(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'))\n"
    )
    out = subprocess.run(
        Lab.wrap(lab.client_ns, [sys.executable, "-c", script]), capture_output=True, text=True, timeout=30
    )
    assert out.stdout.splitlines() == ["HTTP/1.1 404 unknown session", "HTTP/1.1 400 bad fallback request"], out
    log = server.log()
    assert "no session abababab is waiting" in log and "secret-token" not in log


def _tinyproxy(lab: Lab, directory: Path, port: int, connect_port: int) -> subprocess.Popen:
    log = directory / "tinyproxy.log"
    conf = directory / "tinyproxy.conf"
    conf.write_text(
        "\n".join(
            [
                "User root",
                "Group root",
                f"Port {port}",
                "Listen 127.0.0.1",
                "Timeout 60",
                f'LogFile "{log}"',
                "LogLevel Info",
                f'PidFile "{directory / "tinyproxy.pid"}"',
                "MaxClients 20",
                "Allow 127.0.0.1",
                f"ConnectPort {connect_port}",
                "",
            ]
        )
    )
    proc = subprocess.Popen(
        Lab.wrap(lab.client_ns, ["tinyproxy", "-d", "-c", str(conf)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(
        lambda: "Accepting connections" in (log.read_text() if log.exists() else "") or proc.poll() is not None, 10
    )
    return proc


def test_fallback_through_an_http_proxy(lab, server, tmp_path):
    proxy = _tinyproxy(lab, tmp_path, 8899, HTTP_PORT)
    try:
        source = random_file(tmp_path / "proxied.bin", 1_000_000)
        run = _ascp(
            lab,
            server,
            "-y",
            "1",
            "-t",
            str(HTTP_PORT),
            "-x",
            "127.0.0.1:8899",
            str(source),
            f"{server.user}@{server.host}:/",
        )
        assert _ok(run)["Transport"] == "http"
        assert_same_file(source, server.docroot / "proxied.bin")
    finally:
        proxy.terminate()
        proxy.wait(10)
    assert f"CONNECT {SERVER_ADDR}:{HTTP_PORT}" in (tmp_path / "tinyproxy.log").read_text()


def _frames(raw: bytes, jpeg: bool) -> list[bytes]:
    """The frames after the HTTP head of one recorded direction, each checked to re-encode to the bytes seen."""
    head, rest = httpframes.split_head(raw)
    frames = httpframes.FrameDecoder(jpeg).feed(rest)
    assert b"".join(httpframes.encode_frame(f, jpeg) for f in frames) == rest
    return frames


@pytest.mark.parametrize("jpeg", [True, False], ids=["jpeg", "plain"])
def test_jpeg_encoding_on_the_wire(lab, server, tmp_path, jpeg):
    """Through a recording proxy: with -j 1 every frame both ways is a JPEG image (FFD8 ... FFD9, which PIL
    opens); without it, none is."""
    record = tmp_path / "wire"
    record.mkdir()
    tap = subprocess.Popen(
        Lab.wrap(lab.client_ns, [sys.executable, "-m", "tests.support.tap", str(record)]),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": pythonpath()},
        cwd=REPO_ROOT,
    )
    try:
        port = tap.stdout.readline().decode().split()[-1]
        source = random_file(tmp_path / f"wire-{jpeg}.bin", 700_000)
        run = _ascp(
            lab,
            server,
            "-y",
            "1",
            "-t",
            str(HTTP_PORT),
            "-x",
            f"127.0.0.1:{port}",
            *(["-j", "1"] if jpeg else []),
            str(source),
            f"{server.user}@{server.host}:/",
        )
        _ok(run)
        assert_same_file(source, server.docroot / source.name)
    finally:
        tap.terminate()
        tap.wait(10)
    up, down = (record / "0.up").read_bytes(), (record / "0.down").read_bytes()
    assert (b"Content-Type: image/jpeg" in up) == jpeg
    frames_up = _frames(up, jpeg)
    assert sum(map(len, frames_up)) > 700_000  # the file's bytes crossed here, sealed
    for direction in (up, down):
        body = httpframes.split_head(direction)[1]
        pos = 0
        for frame in _frames(direction, jpeg):
            encoded = httpframes.encode_frame(frame, jpeg)
            assert (body[pos : pos + 2] == b"\xff\xd8" and encoded.endswith(b"\xff\xd9")) == jpeg
            pos += len(encoded)
        assert source.read_bytes()[:4096] not in body  # encrypted on the wire
    if jpeg:
        pil = pytest.importorskip("PIL.Image")
        assert pil.open(io.BytesIO(httpframes.encode_frame(frames_up[0], True))).size == (1, 1)


def test_faspmanager_session_reports_the_transport(lab, server, tmp_path):
    source = random_file(tmp_path / "mgr.bin", 800_000)
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "port": server.port,
                "dest": "/",
                "host": server.host,
                "user": server.user,
                "password": server.password,
                "sources": [str(source)],
                "ascp": str(tmp_path / "fasp-ascp"),
                "fallback": {"http_port": HTTP_PORT, "encode_all_as_jpeg": True},
            }
        )
    )
    engine_program(tmp_path)
    out = _in_client(lab, ["manager", str(spec)], os.environ)
    assert out["ok"], out["reason"]
    sessions = [stats for event, stats in out["events"] if event.endswith("SESSION")]
    assert sessions and sessions[0]["transport"] == "http", out["events"][:3]
    assert_same_file(source, server.docroot / "mgr.bin")


def test_fallback_port_hands_only_the_right_token_to_the_engine(tmp_path, caplog):
    """fasp-server's FallbackPort in process: a wrong token is 403 and the engine hears nothing; the right one
    is 101, then bytes flow both ways; the registration is spent (a replay is 404); no token in the log."""

    async def ask(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(httpframes.request(session, token, "127.0.0.1", port, False))
        head = await reader.readuntil(b"\r\n\r\n")
        return reader, writer, httpframes.status_of(httpframes.parse_head(head))

    async def main() -> None:
        door = FallbackPort(None, None)
        port = free_port()
        await door.start("127.0.0.1", port)
        try:
            registration = await Registration.open(door.socket_path, session, token)
            engine = asyncio.ensure_future(registration.wait())
            _, writer, status = await ask(port, "f" * 48)
            assert status == 403 and not engine.done()
            writer.close()
            reader, writer, status = await ask(port, token)
            assert status == 101
            engine_reader, engine_writer, name = await asyncio.wait_for(engine, 5)
            assert name == "http"
            writer.write(b"to the engine")
            assert await engine_reader.readexactly(13) == b"to the engine"
            engine_writer.write(b"to the client")
            assert await reader.readexactly(13) == b"to the client"
            assert (await ask(port, token))[2] == 404
            writer.close()
            engine_writer.close()
        finally:
            await door.close()

    session, token = "cd" * 16, os.urandom(24).hex()
    caplog.set_level("INFO", logger="fasp.server.frontdoor")
    asyncio.run(main())
    assert "wrong token for session cdcdcdcd" in caplog.text and token not in caplog.text
