"""Fewer setup round trips, each by its effect, on a real asyncssh server behind a delaying TCP relay.

The relay holds every byte for half the RTT each way, so a step's round trips are its time over the RTT
(CPU on loopback costs milliseconds). With a password the client logs in with "password", not a
keyboard-interactive prompt and its answer, and without asyncssh's "none" probe: the password request
leaves right behind the service request, so SSH takes 3 round trips; a key's signed request goes without
asking first whether the key is taken, 4 (it waits for the accept: the server's signature algorithms).
The hello leaves right behind the exec request, so the engine's step is the channel open alone and the
first answer comes one round trip later; an exec the server refuses still ends with the channel closed
and the reason in the peer's last words.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from typing import Any

import asyncssh
import pytest

from fasp.options.flags import Endpoint
from fasp.session.messages import Bye
from fasp.session.peer import PeerEngine, _log_in_early, open_ssh
from fasp.session.setupclock import SetupClock
from faspmanager.codes import EngineError, ErrorCode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]  # a real SSH server, seconds on the delayed path
RTT = 0.2
SLACK = 0.5  # round trips of noise allowed per step on a shared machine
PASSWORD = "pw"


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """The test in an event loop of its own."""

    @functools.wraps(test)
    def sync(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return sync


class _Server(asyncssh.SSHServer):
    """Offers password and keyboard-interactive (as asyncssh servers and sshd with PAM do); notes which
    method the client used."""

    def __init__(self, events: list[str], kbdint_only: bool = False, key: asyncssh.SSHKey | None = None) -> None:
        self.events, self.kbdint_only, self.key = events, kbdint_only, key

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return not self.kbdint_only

    def validate_password(self, username: str, password: str) -> bool:
        self.events.append("password")
        return password == PASSWORD

    def public_key_auth_supported(self) -> bool:
        return self.key is not None

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self.events.append("publickey")
        return self.key is not None and key.public_data == self.key.public_data

    def session_requested(self) -> asyncssh.SSHServerSession:
        return _Echo(self.events)

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str):
        self.events.append("keyboard-interactive")
        return "", "", "", [("Password:", False)]

    def validate_kbdint_response(self, username: str, responses) -> bool:
        return list(responses) == [PASSWORD]


class _Echo(asyncssh.SSHServerSession):
    """The "engine": notes the exec request and the data, echoes the data; refuses the command "refuse"."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def connection_made(self, chan) -> None:
        self.chan = chan

    def exec_requested(self, command: str) -> bool:
        self.events.append(f"exec {command}")
        return not command.startswith("refuse")

    def data_received(self, data, datatype) -> None:
        self.events.append("data")
        self.chan.write(data)


@contextlib.asynccontextmanager
async def ssh_server(
    events: list[str], kbdint_only: bool = False, client_key: asyncssh.SSHKey | None = None
) -> AsyncIterator[int]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[key],
        server_factory=lambda: _Server(events, kbdint_only, client_key),
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.asynccontextmanager
async def delayed(port: int, rtt: float) -> AsyncIterator[int]:
    """A TCP relay to 127.0.0.1:port that delays each direction by rtt / 2, in order."""
    tasks: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    writer.close()
                    return
                writer.write(data)

        task = asyncio.create_task(deliver())
        tasks.add(task)
        while True:
            data = await reader.read(1 << 16)
            queue.put_nowait((time.monotonic() + rtt / 2, data))
            if not data:
                return

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        for task in (pump(reader, up_writer), pump(up_reader, writer)):
            tasks.add(asyncio.create_task(task))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()


def remote(port: int, password: str | None = PASSWORD, key_text: str | None = None) -> Endpoint:
    return Endpoint("127.0.0.1", "user", port, password=password, key_text=key_text, ignore_host_key=True)


async def ssh_rounds(endpoint: Endpoint) -> float:
    """Round trips from TCP connected to SSH authenticated."""
    clock = SetupClock()
    conn = await open_ssh(endpoint, clock)
    conn.close()
    return (clock.marks["ssh"] - clock.marks["tcp"]) / 1000 / RTT


@run
async def test_a_password_logs_in_with_password_not_a_prompt():
    events: list[str] = []
    async with ssh_server(events) as port:
        conn = await open_ssh(remote(port), SetupClock())
        conn.close()
    assert events == ["password"]


@run
async def test_a_server_with_only_keyboard_interactive_still_gets_the_password():
    events: list[str] = []
    async with ssh_server(events, kbdint_only=True) as port:
        conn = await open_ssh(remote(port), SetupClock())
        conn.close()
    assert events == ["keyboard-interactive"]


@run
async def test_round_trips_to_the_first_answer_on_a_delayed_path(monkeypatch):
    """SSH 3 (version, key exchange, service with the password request behind it); the channel open 1; the
    hello, pipelined with the exec request, answered 1 round trip later. More than 3 for SSH means asyncssh
    no longer honours peer._log_in_early."""
    monkeypatch.setenv("FASP_REMOTE_COMMAND", "engine")
    events: list[str] = []
    async with ssh_server(events) as port, delayed(port, RTT) as relayed:
        clock = SetupClock()
        peer = await PeerEngine.start(remote(relayed), clock)
        try:
            await peer.channel.send(Bye())
            assert isinstance(await peer.channel.recv(), Bye)
            clock.mark("welcome")
        finally:
            await peer.close()
    marks = clock.marks
    rounds = {
        "ssh": (marks["ssh"] - marks["tcp"]) / 1000 / RTT,
        "engine": (marks["engine"] - marks["ssh"]) / 1000 / RTT,
        "answer": (marks["welcome"] - marks["engine"]) / 1000 / RTT,
    }
    budget = {"ssh": 3, "engine": 1, "answer": 1}  # TCP's connect ends at the relay: not counted here
    assert all(rounds[step] <= budget[step] + SLACK for step in budget), rounds
    assert events == ["password", "exec engine --server", "data"]  # the hello behind the exec request


@run
async def test_a_wrong_password_is_refused_after_one_try():
    events: list[str] = []
    async with ssh_server(events) as port:
        with pytest.raises(EngineError) as failed:
            await open_ssh(remote(port, password="wrong"), SetupClock())
    assert failed.value.code == ErrorCode.AUTH
    assert events == ["password"]  # not asked again, nor as a prompt


@run
async def test_a_key_logs_in_with_its_signed_request_first():
    """4 round trips: version, key exchange, service, the signed request (6 with "none" and the key's query)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    events: list[str] = []
    async with ssh_server(events, client_key=key) as port, delayed(port, RTT) as relayed:
        rounds = await ssh_rounds(remote(relayed, password=None, key_text=key.export_private_key().decode()))
    assert rounds <= 4 + SLACK, rounds
    assert events == ["publickey"]


@run
async def test_a_refused_key_is_followed_by_the_next(tmp_path):
    taken, refused = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    refused.write_private_key(str(tmp_path / "refused"))
    events: list[str] = []
    async with ssh_server(events, client_key=taken) as port:
        endpoint = remote(port, password=None, key_text=taken.export_private_key().decode())
        conn = await open_ssh(replace(endpoint, identity=str(tmp_path / "refused")), SetupClock())
        conn.close()
    assert events == ["publickey", "publickey"]


@run
async def test_a_refused_exec_closes_the_channel_and_says_why(monkeypatch):
    monkeypatch.setenv("FASP_REMOTE_COMMAND", "refuse")
    events: list[str] = []
    async with ssh_server(events) as port:
        peer = await PeerEngine.start(remote(port), SetupClock())
        try:
            await peer.channel.send(Bye())  # written before the refusal arrives: it must go nowhere
            assert await asyncio.wait_for(peer.channel.recv(), 10) is None
            assert "cannot start the remote engine" in peer.last_words()
        finally:
            await peer.close()
    assert "data" not in events


def test_without_the_internals_it_needs_asyncssh_keeps_its_own_order():
    """An asyncssh that renamed what the early login touches is left alone: "none" first, after the accept."""

    class Renamed:
        _auth_methods = [b"none"]

        def send_service_request(self, service: bytes) -> None: ...

        def try_next_auth(self, *, next_method: bool = False) -> None: ...

        def send_userauth_request(self, method: bytes, *args: bytes) -> None: ...

    conn = Renamed()
    _log_in_early(conn, b"password", PASSWORD)
    assert conn._auth_methods == [b"none"] and "send_service_request" not in vars(conn)
