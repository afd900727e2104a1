"""Red-team variants of issue 10 against fasp-server's SSH front door (a hand-built asyncssh client).

MaxAuthTries, as sshd counts it, covers every method: offering public key after public key on one
connection must be cut off like wrong passwords are.
"""
from __future__ import annotations

import asyncio

import asyncssh
import pytest

from tests.support.servers import start_fasp_server

pytestmark = pytest.mark.timeout(120)


class _KeyOffer(asyncssh.SSHClient):
    """Offers one unknown key after another on the same connection, counting them."""

    def __init__(self, keys):
        self.offered = 0
        self._keys = list(keys)

    def public_key_auth_requested(self):
        if not self._keys:
            return None
        self.offered += 1
        return self._keys.pop()


async def _offer(server, keys) -> tuple[int, BaseException]:
    client = _KeyOffer(keys)
    try:
        conn, _ = await asyncssh.create_connection(lambda: client, server.host, server.port, username=server.user,
                                                   known_hosts=None, agent_path=None, client_keys=[],
                                                   preferred_auth="publickey")
    except (asyncssh.Error, OSError) as exc:
        return client.offered, exc
    conn.close()
    raise AssertionError("an unknown key let in")


def test_public_key_offers_are_cut_off_like_passwords(tmp_path):
    keys = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(30)]
    with start_fasp_server(tmp_path, extra_args=["--max-auth-tries", "4"]) as server:
        offered, ended = asyncio.run(_offer(server, keys))
        assert offered <= 5, f"{offered} keys tried on one connection ({ended})"
        assert "too many authentication failures" in str(ended)
        assert "too many authentication failures" in server.log()
