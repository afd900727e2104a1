"""Fixtures for the faspmanager tests: the test stand-in program and sample data."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from tests.support.programs import engine_program, pythonpath

HERE = Path(__file__).resolve().parent


@pytest.fixture
def fake_ascp(tmp_path, monkeypatch) -> Path:
    """An executable that runs tests/manager/fakeascp.py with this interpreter."""
    wrapper = tmp_path / "fake-ascp"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fakeascp.py"}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PYTHONPATH", pythonpath())
    monkeypatch.setenv("FAKEASCP_MODE", "normal")
    return wrapper


@pytest.fixture
def sample_files(tmp_path):
    """Three local files of different sizes (one empty) with random content."""
    src = tmp_path / "src"
    src.mkdir()
    files = []
    for name, size in (("a.bin", 300_000), ("b.txt", 1234), ("empty", 0)):
        path = src / name
        path.write_bytes(os.urandom(size))
        files.append(path)
    return files


class Backend:
    """Where a session test's files go and how orders name them, for one kind of transfer program.

    The same session tests run against every backend: the test stand-in (``fake``) and, when it is
    available, the real engine against a real fasp-server (``engine``).
    """

    name = "fake"

    def __init__(self, ascp_path, remote_root: Path, local_root: Path, monkeypatch):
        self.ascp_path = str(ascp_path)
        self.remote_root = remote_root
        self.local_root = local_root
        self.user, self.host, self.password, self.tcp_port = "tester", "127.0.0.1", "s3cr3t-pass", 2222
        self._monkeypatch = monkeypatch
        remote_root.mkdir(exist_ok=True)
        local_root.mkdir()

    def remote(self, name: str) -> str:
        """How an order names the remote file ``name``."""
        return str(self.remote_root / name)

    def upload_root(self) -> str:
        return str(self.remote_root)

    def options(self, **kwargs):
        from faspmanager import TransferOptions

        kwargs.setdefault("tcp_port", self.tcp_port)
        return TransferOptions(**kwargs)

    def slow(self, options) -> None:
        """Make the next transfer take seconds (long enough to steer it while it runs)."""
        self._monkeypatch.setenv("FAKEASCP_MODE", "slow")

    def up(self, **kwargs):
        return dict(dest_user=self.user, dest_host=self.host, dest_pass=self.password, **kwargs)

    def down(self, **kwargs):
        return dict(source_user=self.user, source_host=self.host, source_pass=self.password, **kwargs)


class EngineBackend(Backend):
    """The real engine (``python -m fasp``) against a real fasp-server on loopback."""

    name = "engine"

    def __init__(self, server, program, local_root: Path, monkeypatch):
        super().__init__(program, server.docroot, local_root, monkeypatch)
        self.user, self.host, self.password, self.tcp_port = server.user, server.host, server.password, server.port

    def remote(self, name: str) -> str:
        return "/" + name  # paths are read relative to the server's docroot

    def options(self, **kwargs):
        from tests.support.ports import free_port

        kwargs.setdefault("udp_port", free_port(socket.SOCK_DGRAM))  # not 33001: tests and helpers run side by side
        return super().options(**kwargs)

    def upload_root(self) -> str:
        return "/"

    def slow(self, options) -> None:
        options.target_rate_kbps = 4000
        options.policy = "fixed"


class SshdBackend(EngineBackend):
    """The real engine through a stock OpenSSH sshd, authenticating with a private key (``-i``)."""

    name = "sshd"

    def __init__(self, server, program, local_root: Path, monkeypatch):
        Backend.__init__(self, program, server.docroot, local_root, monkeypatch)
        self.user, self.host, self.tcp_port, self.identity = server.user, server.host, server.port, str(server.identity)
        self.password = None  # key authentication: no ASPERA_SCP_PASS at all
        monkeypatch.setenv("FASP_REMOTE_COMMAND", server.remote_command)

    def up(self, **kwargs):
        return dict(dest_user=self.user, dest_host=self.host, dest_identity=self.identity, **kwargs)

    def down(self, **kwargs):
        return dict(source_user=self.user, source_host=self.host, source_identity=self.identity, **kwargs)


@pytest.fixture(
    params=["fake", pytest.param("engine", marks=pytest.mark.slow), pytest.param("sshd", marks=pytest.mark.slow)]
)
def backend(request, tmp_path, fake_ascp, monkeypatch) -> Backend:
    if request.param == "fake":
        yield Backend(fake_ascp, tmp_path / "remote", tmp_path / "local", monkeypatch)
        return
    from tests.support.servers import start_fasp_server, start_openssh_server

    if request.param == "engine":
        with start_fasp_server(tmp_path / "fasp-server") as server:
            yield EngineBackend(server, engine_program(tmp_path), tmp_path / "local", monkeypatch)
    else:
        with start_openssh_server(tmp_path / "sshd") as server:
            yield SshdBackend(server, engine_program(tmp_path), tmp_path / "local", monkeypatch)
