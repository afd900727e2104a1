"""Issue 10, item 9: fasp-server had no limits (300 passwords on one connection in 8.7 s, idle
unauthenticated connections held forever, any number of them, any number of engines per user).

Each test attacks a real fasp-server the way the review did: a hand-built asyncssh client, raw TCP
connections that never authenticate, a stock fasp-ascp for the session over the cap.
"""

from __future__ import annotations

import asyncio
import socket
import time

import asyncssh
import pytest

from fasp.session import control
from fasp.session.messages import SessionFailed
from tests.engine.helpers import fasp_args, remote, run_ascp, server_mode_pids
from tests.support.files import assert_same_file, random_file
from tests.support.servers import FaspServer, start_fasp_server
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class _Guesser(asyncssh.SSHClient):
    """Offers one wrong password after another on the same connection, noting when each is asked for."""

    def __init__(self, tries: int):
        self.asked: list[float] = []
        self._left = tries

    def password_auth_requested(self) -> str | None:
        self.asked.append(time.monotonic())
        self._left -= 1
        return f"guess-{self._left}" if self._left >= 0 else None


async def _guess(server: FaspServer, tries: int) -> tuple[list[float], BaseException]:
    """Times between the server's answers to the wrong passwords of one connection, and how it ended."""
    guesser = _Guesser(tries)
    try:
        conn = await asyncssh.connect(
            server.host,
            server.port,
            username=server.user,
            known_hosts=None,
            agent_path=None,
            client_keys=None,
            client_factory=lambda: guesser,
            preferred_auth="password",
        )
    except (asyncssh.Error, OSError) as exc:
        ended = time.monotonic()
        return [b - a for a, b in zip(guesser.asked, [*guesser.asked[1:], ended])], exc
    conn.close()
    raise AssertionError("wrong passwords let in")


def test_password_guessing_is_cut_off_and_slowed(tmp_path):
    delay = 0.1  # short (the default is longer): the test waits out every delay
    with start_fasp_server(tmp_path, extra_args=["--max-auth-tries", "4", "--auth-delay", str(delay)]) as server:
        answers, ended = asyncio.run(_guess(server, 40))
        assert len(answers) == 4, f"{len(answers)} passwords tried on one connection"
        assert "too many authentication failures" in str(ended)
        for i, took in enumerate(answers):  # the delay, doubling per failure from this address
            assert took >= delay * 2**i - 0.05, answers
        # the same address on a new connection: still slower
        again, _ = asyncio.run(_guess(server, 1))
        assert again[0] >= delay * 2**4 - 0.05, again
        assert "too many authentication failures" in server.log()


def _idle(server: FaspServer) -> socket.socket:
    """A connection that says its SSH version and then nothing."""
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.sendall(b"SSH-2.0-idle\r\n")
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (whatever it says first)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def test_unauthenticated_connections_closed_after_the_grace_time(tmp_path):
    with start_fasp_server(tmp_path, extra_args=["--login-grace-time", "2"]) as server:
        socks = [_idle(server) for _ in range(3)]
        try:
            started = time.monotonic()
            assert all(_closed_within(sock, 6) for sock in socks)
            assert time.monotonic() - started >= 1.5
        finally:
            for sock in socks:
                sock.close()


def test_connections_over_the_unauthenticated_cap_refused_at_once(tmp_path):
    with start_fasp_server(tmp_path, extra_args=["--max-startups", "3"]) as server:
        socks = [_idle(server) for _ in range(3)]
        try:
            time.sleep(0.3)
            started = time.monotonic()
            with pytest.raises(asyncssh.DisconnectError, match="too many unauthenticated connections"):
                asyncio.run(_login(server))
            assert time.monotonic() - started < 3
        finally:
            for sock in socks:
                sock.close()
        time.sleep(0.5)  # the idle ones gone, a client gets in again
        asyncio.run(_login(server))


async def _login(server: FaspServer) -> None:
    async with server.ssh():
        pass


async def _hold_sessions(server: FaspServer, count: int, until: asyncio.Event) -> None:
    """``count`` engine sessions of one user, open (each engine waits for its hello) until ``until``."""
    async with server.ssh() as conn:
        procs = [await conn.create_process("fasp-ascp --server", encoding=None) for _ in range(count)]
        await until.wait()
        for proc in procs:
            proc.close()


def test_sessions_over_the_per_user_cap_refused_with_an_error(tmp_path):
    src = random_file(tmp_path / "capped.bin", 64 << 10)
    with start_fasp_server(tmp_path / "srv", extra_args=["--max-sessions", "2"]) as server:

        async def scenario():
            release = asyncio.Event()
            holder = asyncio.create_task(_hold_sessions(server, 2, release))

            def both_started() -> bool:
                return len(server_mode_pids(str(server.docroot))) == 2

            assert await asyncio.to_thread(wait_until, both_started, 10), "the two engines never started"
            assert not holder.done()
            try:
                # a hand-built client: the third session gets an error message, not an engine
                async with server.ssh() as conn:
                    proc = await conn.create_process("fasp-ascp --server", encoding=None)
                    out, err = await asyncio.wait_for(proc.communicate(), 10)
                msg = control.Decoder().feed(out)[0]
                assert isinstance(msg, SessionFailed) and msg.code == 34 and "too many sessions" in msg.desc
                assert proc.exit_status == 1 and b"too many sessions" in err
                # a stock client over the cap: error 34 and why, at once
                started = time.monotonic()
                done = await asyncio.to_thread(
                    run_ascp, fasp_args(server, str(src), remote(server, "/x.bin")), server.env()
                )
                assert done.returncode == 34 and b"too many sessions for user" in done.stderr, done.stderr
                # 34 is not retried (faspmanager.codes): the text says when the server admits one, not "try again"
                assert b"admits a new one once one of them ends" in done.stderr, done.stderr
                assert time.monotonic() - started < 15
                assert not holder.done() and len(server_mode_pids(str(server.docroot))) == 2  # the N still run
            finally:
                release.set()
                await holder

        asyncio.run(scenario())
        time.sleep(0.5)
        done = run_ascp(fasp_args(server, str(src), remote(server, "/capped.bin")), server.env())
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert_same_file(src, server.docroot / "capped.bin")
