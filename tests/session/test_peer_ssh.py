"""The engine's SSH connection (fasp.session.peer.open_ssh) to a real fasp-server: AES-GCM is chosen although
the server lists ChaCha20-Poly1305 first (the client's order decides), so each control packet costs one
OpenSSL call instead of asyncssh's three-context ChaCha20 composition; the host key is still pinned."""

from __future__ import annotations

import asyncio

import pytest

from fasp.options.flags import Endpoint
from fasp.server.frontdoor import ENCRYPTION_ALGS as SERVER_ORDER
from fasp.session.peer import open_ssh
from fasp.session.setupclock import SetupClock
from tests.support.servers import start_fasp_server

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
