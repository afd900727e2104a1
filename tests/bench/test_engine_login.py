"""bench.peers.FaspServer logs the engine in the way scp logs in: with scp's key, so fasp-server pays no scrypt
(a password costs it one at its start and one at each login, CPU the engine's figures used to carry)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from bench.netns import Loopback
from bench.peers import REPO, FaspServer, OpenSSH, Server, SessionPeak, wait_measured
from tests.support.files import random_file, sha256
from tests.support.root import require_root


def _upload(site, fasp: FaspServer, source) -> float:
    """One upload; the server's CPU seconds (sessions included)."""
    fasp.start()
    try:
        client = site.popen(
            "a",
            fasp.ascp([source], rate_kbps=100_000, policy="fixed"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=fasp.client_env(),
            cwd=REPO,
        )
        finished = wait_measured(client, 60, time.monotonic())
        said = client.stdout.read().decode(errors="replace")
        assert finished.returncode == 0, said
    finally:
        served = fasp.stop()
    return served.cpu_s


@pytest.mark.slow
def test_the_engine_logs_in_with_scps_key_and_the_server_pays_no_scrypt(tmp_path):
    require_root("a network namespace")
    source = random_file(tmp_path / "one.bin", 1 << 20)
    docroot = tmp_path / "dest"
    docroot.mkdir()
    with Loopback(f"r7lt{os.getpid() % 100000}") as site:
        by_key = FaspServer(site, tmp_path, docroot)
        assert by_key.identity == OpenSSH(site, tmp_path).identity  # scp's key, the same file
        assert "ASPERA_SCP_PASS" not in by_key.client_env() and "FASP_BENCH_PASSWORD" not in by_key.env()
        key_cpu = _upload(site, by_key, source)
        assert sha256(docroot / "one.bin") == sha256(source) and (docroot / "one.bin").stat().st_size == 1 << 20
        (docroot / "one.bin").unlink()
        password_cpu = _upload(site, FaspServer(site, tmp_path, docroot, login="password"), source)
        assert sha256(docroot / "one.bin") == sha256(source)
    print(f"server CPU: key {key_cpu:.2f} s, password {password_cpu:.2f} s")
    assert key_cpu < password_cpu - 0.4, (key_cpu, password_cpu)  # two scrypt checks of ~0.4 s each


@pytest.mark.slow
def test_a_server_that_dies_at_its_start_raises_its_own_error(tmp_path):
    """fasp-server refusing its host key: the bench says what the server said (stop() used to wait for the
    process the readiness poll had already reaped: ChildProcessError, and the server's words were lost)."""
    require_root("a network namespace")
    with Loopback(f"r8ds{os.getpid() % 100000}") as site:
        fasp = FaspServer(site, tmp_path, tmp_path)
        fasp.host_key.write_text("not a key\n")
        with pytest.raises(RuntimeError, match="Invalid private key"):
            fasp.start()


def test_stopping_a_server_that_already_ended_measures_it():
    """A server may end by itself (a bad host key) between the readiness check and stop(): Popen's send_signal
    polled first and reaped it, and stop()'s wait4 then raised ChildProcessError (a fresh-clone CI run)."""
    server = Server.__new__(Server)
    server.process = subprocess.Popen(["sh", "-c", "exit 2"], stdout=subprocess.PIPE)
    server.peak = SessionPeak(server.process.pid)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{server.process.pid}/stat").read_text().split(")")[1].split()[0] != "Z":  # ended, unreaped
        assert time.monotonic() < deadline
        time.sleep(0.01)
    finished = server.stop()
    assert finished.returncode == 2 and finished.cpu_s >= 0
