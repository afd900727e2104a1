"""The engine's SSH connection (fasp.session.peer.open_ssh) to a real fasp-server: AES-GCM is chosen although
the server lists ChaCha20-Poly1305 first (the client's order decides), so each control packet costs one
OpenSSL call instead of asyncssh's three-context ChaCha20 composition; the host key is still pinned."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from fasp.options.flags import Endpoint
from fasp.server.frontdoor import ENCRYPTION_ALGS as SERVER_ORDER
from fasp.session.peer import PASSWORD_FIRST, _early, open_ssh
from fasp.session.setupclock import SetupClock
from tests.support.servers import OpenSSHServer, start_fasp_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def test_engine_negotiates_aes_gcm_with_a_chacha_first_server(tmp_path):
    assert SERVER_ORDER[0] == "chacha20-poly1305@openssh.com"  # what makes the client's order the one that counts

    async def ciphers(server) -> tuple[str, str]:
        remote = Endpoint(
            server.host,
            server.user,
            server.port,
            password=server.password,
            check_sshfp=server.host_key_fingerprint,
        )
        conn = await open_ssh(remote, SetupClock())
        async with conn:
            return conn.get_extra_info("send_cipher"), conn.get_extra_info("recv_cipher")

    with start_fasp_server(tmp_path / "srv") as server:
        assert asyncio.run(ciphers(server)) == ("aes256-gcm@openssh.com", "aes256-gcm@openssh.com")


def test_openssh_takes_a_password_request_pipelined_behind_the_service_request(openssh_server: OpenSSHServer):
    """This sshd takes keys only: it answers the early password request (sent before its service accept) with
    a failure naming publickey, in order, and the key that follows logs in."""

    async def log_in() -> str:
        conn = await asyncssh.connect(
            openssh_server.host,
            openssh_server.port,
            username=openssh_server.user,
            known_hosts=None,
            agent_path=None,
            password="not-taken-here",
            client_keys=[str(openssh_server.identity)],
            preferred_auth=PASSWORD_FIRST,
            client_factory=lambda: _early(asyncssh.SSHClient, b"password", "not-taken-here"),
        )
        async with conn:
            return (await conn.run("echo in", check=True)).stdout

    assert asyncio.run(log_in()) == "in\n"
    assert "Accepted publickey for root" in openssh_server.log_path.read_text()


def test_openssh_takes_a_key_signed_without_the_query_first(openssh_server: OpenSSHServer):
    """sshd logs "Postponed publickey" when it answers a query; here the signed request is the first."""
    remote = Endpoint(
        openssh_server.host,
        openssh_server.user,
        openssh_server.port,
        identity=str(openssh_server.identity),
        check_sshfp=openssh_server.host_key_fingerprint,
    )

    async def log_in() -> None:
        conn = await open_ssh(remote, SetupClock())
        conn.close()
        await conn.wait_closed()

    asyncio.run(log_in())
    log = openssh_server.log_path.read_text()
    assert "Accepted publickey for root" in log and "Postponed publickey" not in log
