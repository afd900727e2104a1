"""Red-team variants of issue 10 against fasp-server's SSH front door (a hand-built asyncssh client).

MaxAuthTries, as sshd counts it, covers every method: offering public key after public key on one
connection must be cut off like wrong passwords are.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncssh
import pytest

from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


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
        conn, _ = await asyncssh.create_connection(
            lambda: client,
            server.host,
            server.port,
            username=server.user,
            known_hosts=None,
            agent_path=None,
            client_keys=[],
            preferred_auth="publickey",
        )
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


BOB_PASSWORD = "bob-has-a-long-password"


def _key_user_and_bob(tmp_path, name: str):
    """A users file: ``name`` logs in with a fresh key (returned), bob with BOB_PASSWORD; a docroot each."""
    from fasp.server.users import hash_password

    key = asyncssh.generate_private_key("ssh-ed25519")
    for user in (name, "bob"):
        (tmp_path / user).mkdir()
    users = tmp_path / "users.toml"
    users.write_text(
        f'[users.{name}]\ndocroot = "{tmp_path / name}"\n'
        f'authorized_keys = ["{key.export_public_key().decode().strip()}"]\n'
        f'[users.bob]\ndocroot = "{tmp_path / "bob"}"\npassword_hash = "{hash_password(BOB_PASSWORD)}"\n'
    )
    return key, users


class _Switch(asyncssh.SSHClient):
    """Starts authenticating as alice (whose key it holds), then offers that key as bob."""

    def __init__(self, key):
        self._key, self.conn = key, None

    def connection_made(self, conn):
        self.conn = conn

    def public_key_auth_requested(self):
        self.conn._username = "bob"  # the next request names another user, same key
        return self._key


def test_a_users_key_never_logs_in_as_another_user(tmp_path):
    """Held: asyncssh re-reads the authorized keys when the user name changes between requests."""
    key, users = _key_user_and_bob(tmp_path, "alice")

    async def attempt(server):
        try:
            conn, _ = await asyncssh.create_connection(
                lambda: _Switch(key),
                server.host,
                server.port,
                username="alice",
                known_hosts=None,
                agent_path=None,
                client_keys=[],
                preferred_auth="publickey",
            )
        except (asyncssh.Error, OSError) as exc:
            return exc
        conn.close()
        return conn.get_extra_info("username")

    with start_fasp_server(tmp_path / "srv", users_file=users) as server:
        outcome = asyncio.run(attempt(server))
        assert isinstance(outcome, BaseException), f"logged in as {outcome} with alice's key"
        assert "authenticated bob" not in server.log()


def _hold(host: str, port: int, stop, count: int = 400) -> None:
    """Keep about ``count`` silent connections open, opening new ones as the server drops old ones."""
    import socket
    from collections import deque

    held: deque = deque()
    while not stop.is_set():
        try:
            held.append(socket.create_connection((host, port), timeout=0.2))
        except OSError:
            time.sleep(0.05)
        while len(held) > count:
            held.popleft().close()
    for sock in held:
        sock.close()


def test_idle_connections_to_the_fallback_port_do_not_lock_users_out(tmp_path):
    """An outsider keeps hundreds of connections to the HTTP fallback port open, sending nothing: the
    server's descriptors (1024 under systemd; 256 here) must still serve an SSH user's upload."""
    import socket
    import threading

    from tests.engine.helpers import fasp_args, remote, run_ascp
    from tests.support.files import assert_same_file, random_file
    from tests.support.ports import free_port

    http_port = free_port(socket.SOCK_STREAM)
    with start_fasp_server(
        tmp_path / "srv", extra_args=["--http-port", str(http_port)], wrapper=["prlimit", "--nofile=256:256"]
    ) as server:
        stop = threading.Event()
        attacker = threading.Thread(target=_hold, args=(server.host, http_port, stop), daemon=True)
        attacker.start()
        try:
            time.sleep(3)
            payload = random_file(tmp_path / "up.bin", 100_000)
            result = run_ascp(fasp_args(server, str(payload), remote(server, "/")), server.env(), timeout=40)
        finally:
            stop.set()
            attacker.join()
        assert result.returncode == 0, f"locked out by idle fallback connections: {result.stderr[-300:]!r}"
        assert_same_file(payload, server.docroot / "up.bin")


def test_a_session_request_chooses_neither_the_engine_nor_its_environment(tmp_path):
    """Held: an authenticated user asks for another command, sets LD_PRELOAD/PYTHONPATH/FASP_* through env
    requests, asks for a subsystem and for port forwarding: the engine runs as configured, environment
    untouched, and no forwarding is opened."""
    from tests.engine.helpers import server_mode_pids
    from tests.support.wait import wait_until

    evil = {
        "LD_PRELOAD": "/tmp/evil.so",
        "PYTHONPATH": "/tmp/evil",
        "FASP_RESUME_KEY": "00" * 32,
        "FASP_NO_OPENAT2": "1",
        "FASP_LOCAL_DOCROOT": "/",
    }

    async def attack(server):
        async with server.ssh() as conn:
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", server.port)
            seen = []
            for request in (
                {"command": "/bin/sh -c 'id > /tmp/pwned' ; fasp-ascp --server --docroot /", "env": evil},
                {"command": "fasp-ascp --server --docroot /"},
                {"subsystem": "sftp"},
            ):
                try:
                    process = await conn.create_process(encoding=None, **request)
                except asyncssh.ChannelOpenError:  # refused as a whole: fine too
                    seen.append(None)
                    continue
                assert wait_until(lambda: server_mode_pids(str(server.docroot)), 10)
                pid = server_mode_pids(str(server.docroot))[0]
                seen.append(
                    (
                        Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"),
                        Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"),
                    )
                )
                process.close()
                await process.wait_closed()
                assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 10)
            return seen

    with start_fasp_server(tmp_path / "srv") as server:
        seen = asyncio.run(attack(server))
        assert seen[1] is not None  # the plain session runs; the others may be refused whole
        for cmdline, environ in filter(None, seen):
            assert cmdline[cmdline.index(b"--docroot") + 1] == str(server.docroot).encode(), cmdline
            assert not {f"{k}={v}".encode() for k, v in evil.items()} & set(environ), environ


def test_one_users_idle_connections_do_not_lock_other_users_out(tmp_path):
    """An authenticated user (a key: no scrypt to wait for) opens connection after connection and never
    asks for a session: the sessions cap never sees them, and one process's descriptors (256 here) run out
    for every other user."""
    from tests.engine.helpers import fasp_args, run_ascp
    from tests.support.files import assert_same_file, random_file

    key, users = _key_user_and_bob(tmp_path, "mallory")

    async def hold(server, count=300):
        conns = []
        for _ in range(count):
            try:
                conns.append(
                    await asyncio.wait_for(
                        asyncssh.connect(
                            server.host,
                            server.port,
                            username="mallory",
                            known_hosts=None,
                            agent_path=None,
                            client_keys=[key],
                            password=None,
                        ),
                        3,
                    )
                )
            except (TimeoutError, asyncssh.Error, OSError):
                break
        return conns

    with start_fasp_server(tmp_path / "srv", users_file=users, wrapper=["prlimit", "--nofile=256:256"]) as server:
        loop = asyncio.new_event_loop()
        try:
            conns = loop.run_until_complete(hold(server))
            payload = random_file(tmp_path / "up.bin", 50_000)
            env = {**server.env(), "ASPERA_SCP_PASS": BOB_PASSWORD}
            result = run_ascp(fasp_args(server, str(payload), f"bob@{server.host}:/"), env, timeout=40)
            for conn in conns:
                conn.close()
        finally:
            loop.close()
        assert result.returncode == 0, f"bob locked out by mallory's {len(conns)} connections: {result.stderr[-300:]!r}"
        assert_same_file(payload, tmp_path / "bob" / "up.bin")


def test_the_servers_password_is_not_left_in_its_proc_environ(fasp_server):
    """--password-env VAR: once hashed, the password is blanked in the block any process of the user can read."""

    def environ() -> bytes:
        return Path(f"/proc/{fasp_server.process.pid}/environ").read_bytes()

    # the blanking follows the start by a moment (after the hash)
    assert wait_until(lambda: fasp_server.password.encode() not in environ(), 10, 0.1), (
        "fasp-server's /proc/PID/environ holds the password"
    )


def test_the_queue_s_secrets_in_the_server_s_environment_reach_none_of_its_engines(tmp_path, monkeypatch):
    """The Procfile's processes share one .env, so fasp-server gets the queue's shared key and the Redis URL
    with its password: an engine that parses what the network sends (its warm fork server too) holds neither."""
    from tests.engine.helpers import server_mode_pids

    queue = {
        "FASPQ_SECRET_KEY": "queue-shared-key-0123456789abcdef",
        "FASPQ_REDIS_URL": "redis://:redis-password-42@127.0.0.1:6379/0",
        "FASPQ_REDIS_PASSWORD": "redis-password-42",
    }
    for name, value in queue.items():
        monkeypatch.setenv(name, value)

    async def environ_of_an_engine(server) -> bytes:
        async with server.ssh() as conn:
            process = await conn.create_process("fasp-ascp --server", encoding=None)
            assert wait_until(lambda: server_mode_pids(str(server.docroot)), 10)
            environ = Path(f"/proc/{server_mode_pids(str(server.docroot))[0]}/environ").read_bytes()
            process.close()
            await process.wait_closed()
            return environ

    with start_fasp_server(tmp_path / "srv") as server:
        environ = asyncio.run(environ_of_an_engine(server))
    assert b"PATH=" in environ  # (what it needs stays)
    for value in queue.values():
        assert value.encode() not in environ, environ
