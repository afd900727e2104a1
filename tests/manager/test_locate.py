"""Which program a session runs: explicit path, $FASPMANAGER_ASCP, IBM's ascp, then our engine."""

from __future__ import annotations

import sys

import pytest

from faspmanager import locate
from faspmanager.locate import locate_ascp


def _program(path):
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """An empty PATH, no FASPMANAGER_ASCP and no IBM install places: only what a test adds exists."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.delenv("FASPMANAGER_ASCP", raising=False)
    monkeypatch.setattr(locate, "IBM_INSTALL_PLACES", (str(tmp_path / "opt" / "aspera" / "bin" / "ascp"),))
    return bindir


def test_falls_back_to_our_engine_module(clean):
    assert locate_ascp() == [sys.executable, "-m", "fasp"]


def test_fasp_ascp_on_path(clean):
    ours = _program(clean / "fasp-ascp")
    assert locate_ascp() == [str(ours)]


def test_ibm_install_place_beats_our_engine(clean, tmp_path):
    _program(clean / "fasp-ascp")
    ibm = tmp_path / "opt" / "aspera" / "bin" / "ascp"
    ibm.parent.mkdir(parents=True)
    _program(ibm)
    assert locate_ascp() == [str(ibm)]


def test_ibm_ascp_on_path_wins(clean, tmp_path):
    _program(clean / "fasp-ascp")
    ibm = _program(clean / "ascp")
    assert locate_ascp() == [str(ibm)]


def test_environment_beats_path(clean, tmp_path, monkeypatch):
    _program(clean / "ascp")
    configured = _program(tmp_path / "my-ascp")
    monkeypatch.setenv("FASPMANAGER_ASCP", str(configured))
    assert locate_ascp() == [str(configured)]
    monkeypatch.setenv("FASPMANAGER_ASCP", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="FASPMANAGER_ASCP"):
        locate_ascp()


def test_explicit_path_beats_everything_and_must_be_executable(clean, tmp_path, monkeypatch):
    monkeypatch.setenv("FASPMANAGER_ASCP", str(_program(tmp_path / "env-ascp")))
    explicit = _program(tmp_path / "explicit")
    assert locate_ascp(str(explicit)) == [str(explicit)]
    not_exec = tmp_path / "plain"
    not_exec.write_text("data")
    with pytest.raises(FileNotFoundError, match="ascp_path"):
        locate_ascp(str(not_exec))
    with pytest.raises(FileNotFoundError):
        locate_ascp(str(tmp_path / "nowhere"))


def test_explicit_bare_name_is_looked_up_on_path(clean):
    named = _program(clean / "custom-ascp")
    assert locate_ascp("custom-ascp") == [str(named)]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_default_lookup_runs_our_engine_for_a_real_transfer(clean, tmp_path, monkeypatch):
    """No ascp anywhere: session() falls back to ``python -m fasp`` and the bytes arrive."""
    import socket

    import faspmanager as fm
    from tests.support.files import sha256
    from tests.support.ports import free_port
    from tests.support.programs import REPO_ROOT
    from tests.support.servers import start_fasp_server

    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    source = tmp_path / "payload.bin"
    source.write_bytes(bytes(range(256)) * 4000)
    with start_fasp_server(tmp_path / "server") as server:
        options = fm.TransferOptions(tcp_port=server.port, udp_port=free_port(socket.SOCK_DGRAM), destination_root="/")
        order = fm.FileUpload(str(source), server.user, server.host, dest_pass=server.password, options=options)
        with fm.session(order) as s:
            s.start()
            assert s.ascp_path == sys.executable
            result = s.finish()
        assert result.ok(), result.reason()
        assert sha256(server.docroot / "payload.bin") == sha256(source)
