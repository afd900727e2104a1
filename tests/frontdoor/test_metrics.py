"""fasp-server's Prometheus endpoint, scraped over HTTP around real logins and real transfers: a wrong password
counts one authentication failure, a transfer one session of its user (running while it runs), and the bytes by
direction are the file's size, as the server's engine moved them."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess

import asyncssh
import pytest
from prometheus_client import REGISTRY

from tests.support.files import assert_same_file, random_file
from tests.support.programs import ENGINE, SERVER, pythonpath
from tests.support.scrape import logged_endpoint, scrape
from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def test_sessions_auth_failures_and_bytes_by_direction(tmp_path):
    with start_fasp_server(tmp_path / "srv", user="carol", extra_args=("--metrics-port", "0")) as server:
        url = logged_endpoint(server.log_path, "fasp-server metrics")
        assert url.startswith("http://127.0.0.1:")  # loopback unless --metrics-address says otherwise
        before = scrape(url)
        user = {"user": "carol"}

        async def wrong_password() -> None:
            with pytest.raises(asyncssh.PermissionDenied):
                await asyncssh.connect(
                    server.host,
                    server.port,
                    username="carol",
                    password="not-the-password",
                    client_keys=None,
                    known_hosts=None,
                    agent_path=None,
                )

        asyncio.run(wrong_password())
        assert scrape(url).value("fasp_server_auth_failures_total", method="password") == (
            before.value("fasp_server_auth_failures_total", method="password") + 1
        )

        size = 2_000_000
        src = random_file(tmp_path / "up.bin", size)
        upload = subprocess.Popen(  # 16 Mbit at 8 Mbit/s: about 2 s, time to see the session running
            [*ENGINE, "-q", "-P", str(server.port), "-l", "8000", str(src), f"carol@{server.host}:/"],
            env=server.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert wait_until(lambda: scrape(url).value("fasp_server_sessions_running", **user) == 1, 30, step=0.1)
        _, err = upload.communicate(timeout=60)
        assert upload.returncode == 0, err
        assert_same_file(src, server.docroot / "up.bin")
        down = tmp_path / "down"
        down.mkdir()
        done = subprocess.run(
            [*ENGINE, "-q", "-P", str(server.port), f"carol@{server.host}:/up.bin", str(down)],
            env=server.env(),
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert_same_file(src, down / "up.bin")

        assert wait_until(lambda: scrape(url).value("fasp_server_sessions_running", **user) == 0, 10)
        after = scrape(url)
        assert (
            after.value("fasp_server_sessions_total", **user) - before.value("fasp_server_sessions_total", **user) == 2
        )
        grown = {
            direction: after.value("fasp_server_bytes_total", **user, direction=direction)
            - before.value("fasp_server_bytes_total", **user, direction=direction)
            for direction in ("in", "out")
        }
        assert grown == {"in": size, "out": size}
        assert after.value("fasp_server_auth_failures_total", method="password") == (
            before.value("fasp_server_auth_failures_total", method="password") + 1
        )


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (ss, as an operator would look)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[3].rpartition(":")[2]) for line in out.splitlines() if f"pid={pid}," in line}


def test_metrics_are_off_unless_asked_for(tmp_path):
    with start_fasp_server(tmp_path / "srv") as server:
        assert listening_ports(server.process.pid) == {server.port}
        assert "metrics on" not in server.log()


def test_a_taken_metrics_port_is_an_error_at_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*SERVER, "--listen", "127.0.0.1:0", "--user", "dan", "--password-env", "PW", "--docroot", str(tmp_path)]
            + ["--metrics-port", str(port)],
            env={**os.environ, "PW": "correct-horse-battery", "PYTHONPATH": pythonpath()},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "listening on" not in done.stdout


def test_a_session_meter_leaves_no_descriptor_even_after_an_overlong_report():
    """A report line past REPORT_LIMIT stops the reading (a hostile or broken engine cannot grow the server's
    memory); the pipe is closed when the session ends all the same, not left open once per such session."""
    from fasp.server import metrics

    async def session(line: bytes) -> None:
        async with metrics.SessionMeter("ann") as meter:
            os.write(meter.fds[0], line)
            await asyncio.sleep(0.05)  # read (or refused) before the engine "ends"

    loop = asyncio.new_event_loop()
    gc.collect()  # an earlier test's unreferenced socket or file, closed by the collector mid-test, is no leak
    try:
        before = sorted(os.listdir("/proc/self/fd"))
        for line in (b'{"direction": "in", "bytes": 5}\n', b"x" * (4 * metrics.REPORT_LIMIT) + b"\n"):
            loop.run_until_complete(session(line))
            assert sorted(os.listdir("/proc/self/fd")) == before, line[:40]
    finally:
        loop.close()
    assert REGISTRY.get_sample_value("fasp_server_bytes_total", {"user": "ann", "direction": "in"}) >= 5
