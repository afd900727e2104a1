"""The peer's engine: an SSH connection to the peer host and ``fasp-ascp --server`` started over it.

Its stdin/stdout carry the control channel; its stderr is kept (the last 4 KiB) because the peer's last
line there is the reason it gives when it goes away. The peer process ends with our SSH channel. The
engine is asked to start without waiting for the answer: the hello follows the exec request in the same
flight, a round trip saved (a refused exec closes the channel, and the refusal is the last words). The
login starts with the method we will use, a password pipelined behind the service request, a key signed
at once (:func:`_log_in_early`): SSH takes 3 round trips with a password, 4 with a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import socket
from collections.abc import Callable
from typing import Any

import asyncssh

from fasp.datapath.resolve import addresses
from fasp.options.flags import Endpoint
from fasp.session.channel import Channel
from fasp.session.hostkeys import HostKeyPolicy
from fasp.session.setupclock import SetupClock
from faspmanager.codes import EngineError, ErrorCode

REMOTE_COMMAND = "fasp-ascp --server"
REASON = re.compile(r"\berror \d+: |: session failed: |: no hello from |^(?:\w+\.)*\w*(?:Error|Exception)\b")
"""A line of a peer engine's stderr that says why it ended: ``fasp-ascp: error N: ...`` (a refused command
line), server mode's ``session failed: ...`` and ``no hello from ...``, a crash's last traceback line."""
REMOTE_COMMAND_ENV = "FASP_REMOTE_COMMAND"
CONNECT_TIMEOUT = 15.0
CONNECT_TIMEOUT_ENV = "FASP_CONNECT_TIMEOUT"  # seconds; tests and slow networks set it
STDERR_KEPT = 4096
PASSWORD_FIRST = ("gssapi-keyex", "gssapi-with-mic", "hostbased", "publickey", "password", "keyboard-interactive")
"""asyncssh's order of authentication methods with password before keyboard-interactive: given a password,
a server that offers both (asyncssh servers, sshd with PAM) takes it in one round trip instead of a prompt
and its answer. A server that offers only keyboard-interactive still gets the password as its answer."""


ENCRYPTION_ALGS = "^aes256-gcm@openssh.com,aes128-gcm@openssh.com"
"""asyncssh's ciphers with AES-GCM moved first (OpenSSH's ``^`` list syntax): a control channel packet
costs 2.4 us with it (AES-NI, one OpenSSL call) against 14.5 us with ChaCha20-Poly1305, asyncssh's first
choice, which it composes in Python from three cipher contexts per packet. The client's order decides; a
server that offers neither still gets ChaCha20 and the rest."""


USERAUTH = b"ssh-userauth"
QUERY, SIGNED = b"\x00", b"\x01"  # a publickey request's flag: asking whether the key is taken, or signed


def _log_in_early(conn: Any, method: bytes, password: str | None) -> None:
    """Start authentication with ``method`` instead of asyncssh's "none" probe: with a password, its request
    right behind the service request rather than after the accept (two round trips fewer); with a key, the
    signed request without asking first whether the server takes the key (two fewer).

    asyncssh has no option for these, so this sets its first method list and wraps connection methods, on
    this one connection. The server answers the probe only with the methods it takes, so a failed first
    guess must lose nothing: a server that takes no passwords still gets the password as the
    keyboard-interactive answer (asyncssh gives it there only while unused); a refused key's signature is
    answered like its query would be, and the next key follows. A key's request still waits for the accept:
    the server's signature algorithms, which it needs, arrive just before. Without the internals this
    touches, asyncssh's own order stands (the setup round-trip tests say so loudly)."""
    request, next_auth = getattr(conn, "send_service_request", None), getattr(conn, "try_next_auth", None)
    send = getattr(conn, "send_userauth_request", None)
    if not (callable(request) and callable(next_auth) and callable(send)):
        return
    if getattr(conn, "_auth_methods", None) != [b"none"] or not all(
        hasattr(conn, name) for name in ("_auth", "_auth_in_progress", "_password")
    ):
        return
    conn._auth_methods = [method]
    if password is None:

        async def signed(method: bytes, *args: bytes, key: Any = None, trivial: bool = True) -> None:
            keypair = getattr(conn._auth, "_keypair", None)
            if method == b"publickey" and key is None and args[:1] == (QUERY,) and keypair is not None:
                args, key, trivial = (SIGNED, *args[1:]), keypair, False  # the request the query's OK would bring
            await send(method, *args, key=key, trivial=trivial)

        conn.send_userauth_request = signed
        return
    calls = 0

    def pipelined(service: bytes) -> None:
        request(service)
        if service == USERAUTH:
            conn._auth_in_progress = True
            next_auth()  # the password request follows the service request in the same flight
            conn.try_next_auth = answered

    def answered(*, next_method: bool = False) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            return  # the service accept's call: the request it would send is already on its way
        if calls == 2 and b"password" not in conn._auth_methods:
            conn._password = password  # the server takes no passwords: the prompt may still ask for it
        next_auth(next_method=next_method)

    conn.send_service_request = pipelined


def _early(factory: Callable[[], asyncssh.SSHClient], method: bytes, password: str | None) -> asyncssh.SSHClient:
    """``factory``'s client, which starts authentication with :func:`_log_in_early` once connected."""
    client = factory()
    made = client.connection_made

    def connection_made(conn: asyncssh.SSHClientConnection) -> None:
        made(conn)
        _log_in_early(conn, method, password)

    client.connection_made = connection_made  # type: ignore[method-assign]
    return client


def connect_timeout() -> float:
    """How long the SSH connection and its authentication may take: FASP_CONNECT_TIMEOUT, else 15 s."""
    try:
        value = float(os.environ.get(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT))
    except ValueError:
        raise EngineError(ErrorCode.USAGE, f"{CONNECT_TIMEOUT_ENV} must be a number of seconds") from None
    return value if value > 0 else CONNECT_TIMEOUT


async def _dial(host: str, port: int, clock: SetupClock) -> socket.socket:
    """A TCP connection to the peer (each address in turn), ours so the clock sees when it is up."""
    loop = asyncio.get_running_loop()
    failure: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in await addresses(host, port, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clock.mark("tcp")
        return sock
    raise failure


def _private_key(
    load: Callable[..., asyncssh.SSHKey], source: str, passphrase: str | None
) -> tuple[asyncssh.SSHKey, bool]:
    """A private key, and whether ``passphrase`` (ASPERA_SCP_PASS, as IBM's ascp takes an encrypted key's) opened
    it: a plain key loads without one."""
    try:
        return load(source), False
    except asyncssh.KeyImportError:
        if passphrase is None:
            raise
    return load(source, passphrase), True


async def open_ssh(remote: Endpoint, clock: SetupClock) -> asyncssh.SSHClientConnection:
    """An authenticated SSH connection to the peer, or EngineError with the ascp code for the failure.

    The host key is checked as OpenSSH does (known_hosts, see :mod:`fasp.session.hostkeys`), or against the
    --check-sshfp pin, before any credential is offered; --ignore-host-key alone skips the check."""
    policy = HostKeyPolicy(remote)
    options: dict[str, Any] = dict(
        host=remote.host,
        port=remote.port,
        username=remote.user,
        agent_path=None,
        encryption_algs=ENCRYPTION_ALGS,
        **policy.connect_options(),
    )
    keys, password = [], remote.password
    try:
        if remote.identity:
            keys.append(_private_key(asyncssh.read_private_key, remote.identity, password))
        if remote.key_text:
            keys.append(_private_key(asyncssh.import_private_key, remote.key_text, password))
    except (OSError, asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:  # (the latter: a wrong passphrase)
        raise EngineError(ErrorCode.AUTH, f"cannot load private key: {exc}") from None
    if any(opened for _, opened in keys):
        password = None  # it was the key's passphrase: no server gets to see it as a password
    if keys:
        options["client_keys"] = [key for key, _ in keys]
    if password is not None:
        options["password"] = password
        options["preferred_auth"] = PASSWORD_FIRST
    # with neither, asyncssh's default client_keys offers the user's ~/.ssh keys, as ssh would
    if keys or password is not None:  # what we will use first, as the "none" probe would tell
        first, password = (b"publickey", None) if keys else (b"password", password)
        factory = options.get("client_factory", asyncssh.SSHClient)
        options["client_factory"] = lambda: _early(factory, first, password)

    async def connect() -> asyncssh.SSHClientConnection:
        sock = await _dial(remote.host, remote.port, clock)
        try:
            conn = await asyncssh.connect(sock=sock, **options)
        except BaseException:
            sock.close()
            raise
        clock.mark("ssh")
        return conn

    try:
        return await asyncio.wait_for(connect(), connect_timeout())
    except asyncssh.PermissionDenied:
        raise EngineError(ErrorCode.AUTH, f"authentication failed for {remote.user}@{remote.host}") from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise policy.refusal(exc.reason) from None
    except TimeoutError:
        raise EngineError(ErrorCode.TRANSFER_TIMEOUT, f"no SSH answer from {remote.host}:{remote.port}") from None
    except (OSError, asyncssh.Error) as exc:
        raise EngineError(ErrorCode.TRANSFER_ERROR, f"cannot reach {remote.host}:{remote.port}: {exc}") from None


def remote_command(command: str | None = None) -> str:
    """``command`` (-S), else ``$FASP_REMOTE_COMMAND`` (or ``fasp-ascp``), with ``--server`` added unless it is
    there."""
    command = command or os.environ.get(REMOTE_COMMAND_ENV, REMOTE_COMMAND)
    return f"{command} --server" if "--server" not in shlex.split(command) else command


class EngineSession(asyncssh.SSHClientSession[bytes]):
    """The remote engine's end of our SSH session channel, as a byte reader and writer for :class:`Channel`.

    asyncssh calls :meth:`connection_made` once the channel is open, before it sends the exec request and
    with no wait between the two; so the hello can be written as soon as :attr:`opened` is set and leaves
    behind the exec request, one round trip earlier than after its reply. What arrives only reaches us once
    the exec request succeeded (asyncssh starts reading then); if it fails, the channel closes and the reader
    sees the end. stdout is buffered up to READ_BUFFER bytes (reading pauses beyond); stderr keeps its last
    STDERR_KEPT bytes, the peer's last words."""

    READ_BUFFER = 1 << 22

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.stderr = bytearray()
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._inbox = bytearray()
        self._eof = False
        self._lost: Exception | None = None
        self._paused = False
        self._arrived = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    # ---- asyncssh's callbacks -----------------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self._chan = chan
        self.opened.set_result(None)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.stderr += data
            del self.stderr[:-STDERR_KEPT]
            return
        self._inbox += data
        self._arrived.set()
        if len(self._inbox) >= self.READ_BUFFER and self._chan is not None and not self._paused:
            self._paused = True
            self._chan.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._arrived.set()
        return True  # half open: what we still write may reach the peer

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof, self._lost = True, exc
        self._arrived.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ---- reader and writer --------------------------------------------------------------------------

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of the engine's stdout; b"" at its end (the channel's error if it broke)."""
        while not self._inbox and not self._eof:
            self._arrived.clear()
            await self._arrived.wait()
        if not self._inbox:
            if self._lost is not None:
                raise self._lost
            return b""
        data = bytes(self._inbox[:n])
        del self._inbox[:n]
        if self._paused and len(self._inbox) < self.READ_BUFFER // 2 and self._chan is not None:
            self._paused = False
            self._chan.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if self._chan is None:
            raise BrokenPipeError("the engine's channel is not open")
        self._chan.write(data)

    async def drain(self) -> None:
        await self._writable.wait()
        if self._lost is not None:
            raise self._lost

    def close(self) -> None:
        """Our end of the engine's stdin (EOF); the channel itself closes with :meth:`end`."""
        if self._chan is not None:
            with contextlib.suppress(Exception):  # already closed
                self._chan.write_eof()

    def end(self) -> None:
        """Close the channel: the engine's process ends with it."""
        if self._chan is not None:
            self._chan.close()


class PeerEngine:
    """The running peer engine: its control channel and its last words. Built by :meth:`start`."""

    def __init__(
        self,
        conn: asyncssh.SSHClientConnection,
        session: EngineSession,
        started: asyncio.Future[Any],
    ) -> None:
        self._conn = conn
        self._session = session
        self._started = started  # the exec request's answer
        self.channel = Channel(session, session)

    @classmethod
    async def start(cls, remote: Endpoint, clock: SetupClock) -> PeerEngine:
        """SSH to ``remote``, open a session channel and ask it to start the engine. Returns once the exec
        request is sent, without its answer: the caller's hello follows it at once. If the engine cannot be
        started the channel closes (the reader sees the end; :meth:`last_words` says why); if the channel
        cannot even be opened, TRANSFER_ERROR."""
        conn = await open_ssh(remote, clock)
        session = EngineSession()
        started: asyncio.Future[Any] = asyncio.ensure_future(
            conn.create_session(lambda: session, remote_command(remote.command), encoding=None)
        )
        try:
            await asyncio.wait({started, session.opened}, return_when=asyncio.FIRST_COMPLETED)
            if not session.opened.done():
                started.result()  # raises why the channel could not be opened
        except asyncssh.Error as exc:
            await _close_connection(conn)
            raise EngineError(ErrorCode.TRANSFER_ERROR, f"cannot start the remote engine: {exc}") from None
        except BaseException:  # cancelled while starting: the connection is ours to close
            started.cancel()
            await _close_connection(conn)
            raise
        started.add_done_callback(_retrieved)
        clock.mark("engine")
        return cls(conn, session, started)

    def last_words(self) -> str:
        """The reason the peer gave before going away: its last line of stderr that states one (an error, a
        failed session, a crash), not an info line or a usage hint after it; or why it never started."""
        lines = self._session.stderr.decode(errors="replace").strip().splitlines()
        for line in reversed(lines):
            if REASON.search(line):
                return line
        started = self._started
        if started.done() and not started.cancelled() and started.exception() is not None:
            return f"cannot start the remote engine: {started.exception()}"
        return ""

    async def close(self) -> None:
        """End the peer process and the SSH connection; never raises."""
        self.channel.close()
        self._session.end()
        self._started.cancel()
        await _close_connection(self._conn)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a failed exec answer as seen: the failure surfaces through the closed channel instead."""
    if not future.cancelled():
        future.exception()


async def _close_connection(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    try:
        await asyncio.wait_for(conn.wait_closed(), 2.0)
    except (TimeoutError, Exception):
        pass
