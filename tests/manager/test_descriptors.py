"""Many sessions in one process leave no descriptors behind, in the library's process or in fasp-server: a
worker or a transfer server runs for weeks, and one descriptor per session (a pipe end, a socket, an event
loop's epoll) would stop it at its limit, while a number closed twice would close a stranger's file."""

from __future__ import annotations

import os

import pytest

import faspmanager as fm
from faspmanager.codes import ErrorCode
from tests.support.files import assert_same_file, random_file
from tests.support.servers import start_fasp_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROUNDS = 6


def _open(pid: int | str = "self") -> list[str]:
    return sorted(os.listdir(f"/proc/{pid}/fd"))


def _round(server, source, n: int) -> None:
    """A good upload, then one with the wrong password: error paths are where descriptors leak."""
    for password, name in ((server.password, f"up{n}.bin"), ("not-the-password", f"refused{n}.bin")):
        order = fm.FileUpload(
            source_paths=str(source),
            dest_user=server.user,
            dest_host=server.host,
            dest_pass=password,
            dest_paths=name,
            options=fm.TransferOptions(target_rate_kbps=500_000, tcp_port=server.port),
        )
        with fm.session(order=order) as session:
            session.start()
            result = session.finish()
        if password == server.password:
            assert result.ok(), result
            assert_same_file(source, server.docroot / name)
        else:
            assert result.failed() and result.stats().get("code") == int(ErrorCode.AUTH), result
            assert not (server.docroot / name).exists()


@pytest.fixture(scope="module")
def fasp_server(tmp_path_factory):
    """A wrong password answered at once (1 ms, doubling), so that the rounds stay quick."""
    with start_fasp_server(tmp_path_factory.mktemp("srv"), extra_args=("--auth-delay", "0.001")) as server:
        yield server


@pytest.mark.parametrize("warm", ["0", "1"], ids=["exec", "warm"])
def test_sessions_leave_no_descriptors_behind(fasp_server, tmp_path, monkeypatch, warm):
    monkeypatch.setenv("FASPMANAGER_WARM", warm)
    source = random_file(tmp_path / "src.bin", 256 << 10)
    _round(fasp_server, source, 0)  # first use: the warm fork server, lazy imports and caches settle
    ours, theirs = _open(), _open(fasp_server.process.pid)
    for n in range(1, ROUNDS):
        _round(fasp_server, source, n)
    assert _open() == ours
    assert _open(fasp_server.process.pid) == theirs
