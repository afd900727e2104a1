"""The peer's engine: an SSH connection to the peer host and ``fasp-ascp --server`` started over it.

Its stdin/stdout carry the control channel; its stderr is kept (the last 4 KiB) because the peer's last
line there is the reason it gives when it goes away. The peer process ends with our SSH channel.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
from typing import Any

import asyncssh

from fasp.options.flags import Endpoint
from fasp.session.channel import Channel
from fasp.session.hostkeys import HostKeyPolicy
from fasp.session.setupclock import SetupClock
from faspmanager.codes import EngineError, ErrorCode

REMOTE_COMMAND = "fasp-ascp --server"
REMOTE_COMMAND_ENV = "FASP_REMOTE_COMMAND"
CONNECT_TIMEOUT = 15.0
CONNECT_TIMEOUT_ENV = "FASP_CONNECT_TIMEOUT"  # seconds; tests and slow networks set it
STDERR_KEPT = 4096
PASSWORD_FIRST = ("gssapi-keyex", "gssapi-with-mic", "hostbased", "publickey", "password", "keyboard-interactive")
"""asyncssh's order of authentication methods with password before keyboard-interactive: given a password,
a server that offers both (asyncssh servers, sshd with PAM) takes it in one round trip instead of a prompt
and its answer. A server that offers only keyboard-interactive still gets the password as its answer."""


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
    for family, kind, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
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


async def open_ssh(remote: Endpoint, clock: SetupClock) -> asyncssh.SSHClientConnection:
    """An authenticated SSH connection to the peer, or EngineError with the ascp code for the failure.

    The host key is checked as OpenSSH does (known_hosts, see :mod:`fasp.session.hostkeys`), or against the
    --check-sshfp pin, before any credential is offered; --ignore-host-key alone skips the check."""
    policy = HostKeyPolicy(remote)
    options: dict[str, Any] = dict(
        host=remote.host, port=remote.port, username=remote.user, agent_path=None, **policy.connect_options()
    )
    keys = []
    try:
        if remote.identity:
            keys.append(asyncssh.read_private_key(remote.identity))
        if remote.key_text:
            keys.append(asyncssh.import_private_key(remote.key_text))
    except (OSError, asyncssh.KeyImportError) as exc:
        raise EngineError(ErrorCode.AUTH, f"cannot load private key: {exc}") from None
    if keys:
        options["client_keys"] = keys
    if remote.password is not None:
        options["password"] = remote.password
        options["preferred_auth"] = PASSWORD_FIRST
    if not keys and remote.password is None:
        options["client_keys"] = None  # default ~/.ssh keys, as ssh would

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


def remote_command() -> str:
    """``$FASP_REMOTE_COMMAND`` (or ``fasp-ascp``), with ``--server`` added unless it is there."""
    command = os.environ.get(REMOTE_COMMAND_ENV, REMOTE_COMMAND)
    return f"{command} --server" if "--server" not in shlex.split(command) else command


class PeerEngine:
    """The running peer engine: its control channel and its last words. Built by :meth:`start`."""

    def __init__(self, conn: asyncssh.SSHClientConnection, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self._conn = conn
        self._proc = proc
        self.channel = Channel(proc.stdout, proc.stdin)
        self._stderr = bytearray()
        self._stderr_task = asyncio.create_task(self._collect_stderr())

    @classmethod
    async def start(cls, remote: Endpoint, clock: SetupClock) -> PeerEngine:
        """SSH to ``remote`` and start the engine there (TRANSFER_ERROR if the command cannot be started)."""
        conn = await open_ssh(remote, clock)
        try:
            proc = await conn.create_process(remote_command(), encoding=None)
        except asyncssh.Error as exc:
            await _close_connection(conn)
            raise EngineError(ErrorCode.TRANSFER_ERROR, f"cannot start the remote engine: {exc}") from None
        except BaseException:  # cancelled while starting: the connection is ours to close
            await _close_connection(conn)
            raise
        clock.mark("engine")
        return cls(conn, proc)

    async def _collect_stderr(self) -> None:
        try:
            while True:
                data = await self._proc.stderr.read(STDERR_KEPT)
                if not data:
                    return
                self._stderr += data
                del self._stderr[:-STDERR_KEPT]
        except Exception:  # the channel is gone: nothing more to read
            return

    def last_words(self) -> str:
        """The peer's last line of stderr: the reason it gave before going away."""
        lines = self._stderr.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    async def close(self) -> None:
        """End the peer process and the SSH connection; never raises."""
        self.channel.close()
        self._proc.close()
        await _close_connection(self._conn)


async def _close_connection(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    try:
        await asyncio.wait_for(conn.wait_closed(), 2.0)
    except (TimeoutError, Exception):
        pass
