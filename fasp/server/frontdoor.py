"""fasp-server: the SSH front door of a transfer server.

It authenticates users from a users file (or one user given on the command
line, for scripts and tests) and, for every SSH session, runs OUR server-mode
engine with that user's docroot and caps, whatever command the client asked
for: the client never chooses where the server may read and write. The
session's channel is piped both ways to the engine's stdin/stdout/stderr as
raw bytes; the engine process ends when the channel closes, and all of them
end on SIGTERM.

    fasp-server --listen 127.0.0.1:33001 --users users.toml
    fasp-server --listen 127.0.0.1:0 --user NAME --password-env VAR --docroot DIR
    fasp-server ... --http-port 8080 [--https-cert CERT --https-key KEY [--https-client-ca FILE]]

With ``--http-port`` it also owns the HTTP(S) fallback port on the same host:
a client whose UDP cannot pass (``-y 1``) dials it with a one-time token its
server engine registered on this process's private Unix socket
(``FASP_FALLBACK_SOCKET`` in the engines' environment); only a request carrying
the right token for a waiting session is relayed to that engine (see
:mod:`fasp.datapath.httpchannel`), anything else gets an HTTP error and a log line.

Once the port accepts connections, one line "listening on HOST:PORT" goes to
stdout; logs (never secrets, one line per record, control characters escaped) go
to stderr. SIGHUP re-reads the users file (``python -m fasp.server.users add ...`` edits
it); SIGTERM ends every session and exits.

Logs a client asks for (``ascp -R DIR``) go to ``--log-dir LOGDIR`` only, as
LOGDIR/USER/fasp-ascp-server-TIME-PID.log, names the server picks; the client's DIR
is never used, and without --log-dir a client's -R is ignored (one log line says so).

With ``--metrics-port N`` (0 picks a free port, logged) it serves Prometheus metrics on
``--metrics-address`` (127.0.0.1 unless given): sessions per user, authentication failures, file bytes
by direction (fasp/server/metrics.py). Off by default.

Limits (sshd's names in brackets), each refused with a message saying which:
  --max-auth-tries N    password attempts per connection, then disconnected [MaxAuthTries] (6)
  --auth-delay S        a failed attempt is answered after S seconds, doubling with each further failure
                        from the same address (up to 10 s; forgotten after 15 min without one) (0.5)
  --login-grace-time S  a connection not authenticated after S seconds is closed [LoginGraceTime] (30)
  --max-startups N      unauthenticated connections at once; more are refused at once [MaxStartups] (10)
  --max-sessions N      concurrent sessions per user, unless users.toml sets max_sessions (16)
SSH algorithms are current OpenSSH defaults without SHA-1, 1024-bit groups, NIST curves
for key exchange, umac-64 or compression (see KEX_ALGS and its neighbours).

A password given with --password-env must not be weak: empty, shorter than 8
characters, or a very common one (fasp.server.users.password_weakness) refuses to start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import shlex
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
from asyncio.subprocess import PIPE
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncssh
from prometheus_client import start_http_server

from fasp.datapath import httpframes
from fasp.datapath.httpchannel import SOCKET_ENV
from fasp.files.logdir import log_to_stderr
from fasp.server import metrics
from fasp.server.logins import VerifiedLogins
from fasp.server.users import (
    PASSWORD_RULE,
    User,
    UsersFileError,
    hash_password,
    load_users,
    needs_rehash,
    password_weakness,
    read_public_keys,
    replace_hash,
    verify_password,
)
from fasp.session import control
from fasp.session.messages import SessionFailed
from faspmanager.codes import ErrorCode
from faspmanager.envblock import scrub_initial_environment
from faspmanager.forkserver import WARM_MODULE, ForkedProcess, ForkServer

log = logging.getLogger("fasp.server.frontdoor")

ENGINE_COMMAND = (sys.executable, "-m", "fasp")
STOP_GRACE_S = 3.0
KEEPALIVE_S = 15.0  # a client that vanished without closing is dropped after 4 missed keepalives
CHUNK = 64 * 1024
HEAD_TIMEOUT_S = 10.0  # a fallback client must send its request head within this
FALLBACK_STARTUPS = 32  # fallback clients still sending their head at once; more are closed at once
REFUSE_WAIT_S = 5.0  # a refused session's client gets this long to send its hello (the error answers it)
AUTH_DELAY_MAX_S = 10.0
AUTH_FORGET_S = 900.0  # an address's failures are forgotten after this long without a new one
HASH_CONCURRENCY = 2  # password checks at once: each scrypt takes 128 MiB and ~0.4 s of a core

# SSH algorithms: OpenSSH 9.9's defaults minus what ssh-audit rates a failure (SHA-1, NIST P-curves
# for key exchange, umac-64, small groups), no compression (a compression oracle, and nothing to gain
# for a control channel), no ssh-rsa (SHA-1) signatures.
KEX_ALGS = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group16-sha512",
)
ENCRYPTION_ALGS = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "umac-128-etm@openssh.com")
COMPRESSION_ALGS = ("none",)
SIGNATURE_ALGS = (
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)


@functools.cache
def _decoy_hash() -> str:
    """Checked when the user is unknown or has no password: a refusal then takes as long as a
    real check and does not reveal which users exist."""
    return hash_password("decoy")


@dataclass(frozen=True)
class Settings:
    """What the front door needs to decide who gets in and what they run."""

    users: Mapping[str, User]
    users_file: str | None = None  # re-read on SIGHUP
    engine_command: tuple[str, ...] = ENGINE_COMMAND
    udp_port: int | None = None
    child_env: Mapping[str, str] = field(default_factory=dict)
    http_port: int | None = None  # the HTTP(S) fallback port (None: no fallback)
    https_cert: str | None = None  # with https_key: TLS on the fallback port
    https_key: str | None = None
    https_client_ca: str | None = None  # mutual TLS: clients must present a certificate this file vouches for
    log_dir: str | None = None  # where a client's -R log goes, per user (None: -R is ignored)
    max_auth_tries: int = 6  # password attempts per connection
    auth_delay_s: float = 0.5  # delay after an address's first failure, doubling with each next one
    login_grace_s: float = 30.0  # unauthenticated connections are closed after this
    max_startups: int = 10  # unauthenticated connections at once
    max_sessions: int = 16  # concurrent sessions per user without their own max_sessions
    metrics_port: int | None = None  # the Prometheus endpoint (fasp/server/metrics.py): None is off, 0 picks one
    metrics_address: str = "127.0.0.1"
    warm_engines: bool = True  # fork engines from a warm one (with the default engine_command only)


def server_argv(
    engine_command: Sequence[str], user: User, udp_port: int | None = None, log_dir: str | None = None
) -> list[str]:
    """The server-mode command line for one session of ``user``."""
    argv = [*engine_command, "--server", "--docroot", user.docroot]
    if log_dir is not None:
        argv += ["--log-dir", os.path.join(log_dir, _file_name(user.name))]
    if user.rate_cap_kbps is not None:
        argv += ["--rate-cap", str(user.rate_cap_kbps)]
    if user.allowed_policies is not None:
        argv += ["--allowed-policies", ",".join(user.allowed_policies)]
    if udp_port is not None:
        argv += ["-O", str(udp_port)]
    return argv


def _file_name(name: str) -> str:
    """A user name as one safe path component (a changed name gets a digest, so two never collide)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


SECRET_PREFIXES = ("ASPERA_SCP_", "FASPQ_")
"""Variables no engine the server spawns inherits: a client's secrets, and the queue's settings (its shared key,
its Redis URL and password), which one .env for all the Procfile's processes gives the server too."""


def child_environment(environ: Mapping[str, str], secret_vars: Sequence[str] = ()) -> dict[str, str]:
    """The server's environment minus anything secret, for the engine processes it spawns: they parse what the
    network sends."""
    return {k: v for k, v in environ.items() if k not in secret_vars and not k.startswith(SECRET_PREFIXES)}


class FrontDoor:
    """An asyncssh server that turns each authenticated session into one server-mode engine process."""

    def __init__(self, settings: Settings, host_key: asyncssh.SSHKey):
        self._host_key = host_key
        self._use(settings)
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.connections: set[asyncssh.SSHServerConnection] = set()  # kept by _Gate
        self.unauthenticated: set[asyncssh.SSHServerConnection] = set()  # kept by _Gate
        self._sessions: set[asyncio.Task] = set()
        self._active: Counter[str] = Counter()  # running sessions per user
        self.connected: Counter[str] = Counter()  # authenticated connections per user (kept by _Gate)
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (failures, monotonic time of the last)
        self._users_file_lock = asyncio.Lock()
        self._fallback: FallbackPort | None = None
        self._warm: ForkServer | None = None
        self._logins = VerifiedLogins()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the address actually bound (port 0 picks a free one)."""
        self._acceptor = await asyncssh.create_server(
            lambda: _Gate(self),
            host,
            port,
            server_host_keys=[self._host_key],
            process_factory=self._session,
            encoding=None,
            allow_pty=False,
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            keepalive_interval=KEEPALIVE_S,
            keepalive_count_max=4,
            login_timeout=self._settings.login_grace_s,
            kex_algs=list(KEX_ALGS),
            encryption_algs=list(ENCRYPTION_ALGS),
            mac_algs=list(MAC_ALGS),
            compression_algs=list(COMPRESSION_ALGS),
            signature_algs=list(SIGNATURE_ALGS),
        )
        if self._settings.warm_engines and self._settings.engine_command == ENGINE_COMMAND:
            self._warm = ForkServer(WARM_MODULE, env=self._settings.child_env)
            await asyncio.get_running_loop().run_in_executor(None, self._warm.start)
        if self._settings.http_port is not None:
            self._fallback = FallbackPort(
                self._settings.https_cert, self._settings.https_key, self._settings.https_client_ca
            )
            await self._fallback.start(host, self._settings.http_port)
        return host, self._acceptor.get_port()

    async def close(self) -> None:
        """Stop listening, end every engine process, then close every connection."""
        if self._acceptor is not None:
            self._acceptor.close()
        if self._fallback is not None:
            await self._fallback.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        for conn in list(self.connections):
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn in list(self.connections)), return_exceptions=True)
        if self._acceptor is not None:
            await self._acceptor.wait_closed()
        if self._warm is not None:
            self._warm.close()

    def reload_users(self) -> None:
        """Re-read the users file: new logins follow it, running sessions keep what they started with."""
        file = self._settings.users_file
        if file is None:
            log.info("SIGHUP: quick mode has no users file, nothing to re-read")
            return
        try:
            users = load_users(file)
        except UsersFileError as exc:
            log.error("users file not reloaded, keeping the previous one: %s", exc)
            return
        self._use(replace(self._settings, users=users))
        log.info("users file reloaded, users: %s", ", ".join(users))

    def _use(self, settings: Settings) -> None:
        self._settings = settings
        self._authorized = {
            name: asyncssh.import_authorized_keys("\n".join(user.authorized_keys))
            for name, user in settings.users.items()
            if user.authorized_keys
        }
        for user in settings.users.values():
            if not os.path.isdir(user.docroot):
                log.warning("docroot of %s does not exist: %s (their sessions will fail)", user.name, user.docroot)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def settings(self) -> Settings:
        return self._settings

    def failure_delay(self, address: str) -> float:
        """Record a failed attempt from ``address``; how long to wait before saying so (doubling)."""
        now = time.monotonic()
        if len(self._failures) > 10_000:  # bound the memory an address sweep can take
            self._failures = {a: f for a, f in self._failures.items() if now - f[1] < AUTH_FORGET_S}
        count, last = self._failures.get(address, (0, now))
        count = 1 if now - last > AUTH_FORGET_S else count + 1
        self._failures[address] = (count, now)
        return min(self._settings.auth_delay_s * 2 ** (count - 1), AUTH_DELAY_MAX_S)

    def connection_cap(self, username: str) -> int:
        """Authenticated connections a user may hold at once: twice the sessions cap (a client over that cap
        still gets its clear error 34 from a session refused), so that idle connections cannot take the
        descriptors every user's sessions share in this one process."""
        user = self._settings.users.get(username)
        sessions = (user.max_sessions if user is not None and user.max_sessions else 0) or self._settings.max_sessions
        return 2 * sessions

    def authorized_keys(self, username: str) -> asyncssh.SSHAuthorizedKeys | None:
        return self._authorized.get(username)

    async def check_password(self, username: str, password: str) -> bool:
        """Whether ``password`` is ``username``'s; as slow for unknown users as for known ones. A right
        password under an older, cheaper hash gets a new hash (users file rewritten, or in memory). One
        verified within the last few minutes is recalled without scrypt (:mod:`fasp.server.logins`)."""
        user = self._settings.users.get(username)
        stored = user.password_hash if user is not None else None
        if user is not None and stored is not None and self._logins.recalls(username, stored, password):
            return True
        checked = stored if stored is not None else _decoy_hash()
        check = self._logins.shared(username, checked, password, lambda: self._verify(user, checked, password))
        return await asyncio.shield(check)

    async def _verify(self, user: User | None, checked: str, password: str) -> bool:
        """scrypt, and what a success leads to (a rehash, the login remembered): once per shared check."""
        if not await asyncio.to_thread(_bounded, verify_password, checked, password):
            return False
        if user is None or user.password_hash != checked:  # the decoy: an unknown user never gets in
            return False
        if needs_rehash(checked):
            await self._rehash(user, checked, await asyncio.to_thread(_bounded, hash_password, password))
        current = self._settings.users.get(user.name)
        if current is not None and current.password_hash is not None:
            self._logins.remember(user.name, current.password_hash, password)
        return True

    async def _rehash(self, user: User, old_hash: str, new_hash: str) -> None:
        file = self._settings.users_file
        if file is not None:
            async with self._users_file_lock:
                try:
                    saved = await asyncio.to_thread(replace_hash, file, user.name, old_hash, new_hash)
                except (UsersFileError, OSError) as exc:
                    log.error("password hash of %s not upgraded: %s", user.name, exc)
                    return
            if not saved:
                log.warning("password hash of %s not upgraded: the users file changed meanwhile", user.name)
                return
        users = {**self._settings.users, user.name: replace(user, password_hash=new_hash)}
        self._settings = replace(self._settings, users=users)
        log.info(
            "password hash of %s upgraded to the current scrypt cost%s",
            user.name,
            f" in {file}" if file else " (in memory)",
        )

    async def _session(self, process: asyncssh.SSHServerProcess) -> None:
        task = _this_task()
        self._sessions.add(task)
        username = process.get_extra_info("username")
        try:
            user = self._settings.users[username]
            limit = user.max_sessions or self._settings.max_sessions
            if self._active[username] >= limit:
                await _refuse_session(
                    process,
                    f"too many sessions for user {username}: {limit} already running "
                    f"(max_sessions); the server admits a new one once one of them ends",
                )
                return
            self._active[username] += 1
            argv = server_argv(self._settings.engine_command, user, self._settings.udp_port, self._settings.log_dir)
            log.info("session for %s (client asked for %r)", username, (process.command or "")[:200])
            fallback = {SOCKET_ENV: self._fallback.socket_path} if self._fallback is not None else {}
            try:
                async with metrics.SessionMeter(username) as meter:
                    await run_engine(
                        process,
                        argv,
                        user.docroot,
                        {**self._settings.child_env, **ssh_connection(process), **fallback, **meter.env},
                        meter.fds,
                        self._warm,
                    )
            finally:
                self._active[username] -= 1
        finally:
            self._sessions.discard(task)


async def _refuse_session(process: asyncssh.SSHServerProcess, reason: str) -> None:
    """End a session before any engine runs, saying why the way an engine would: an error message on
    the control channel, as the answer to the client's hello (the client reports it as error 34), and
    a line on stderr for anything else."""
    log.warning("session refused: %s", reason)
    with contextlib.suppress(asyncio.TimeoutError, asyncio.IncompleteReadError, asyncssh.Error, OSError):
        head = await asyncio.wait_for(process.stdin.readexactly(4), REFUSE_WAIT_S)
        length = min(int.from_bytes(head, "big"), control.MAX_FRAME)
        await asyncio.wait_for(process.stdin.readexactly(length), REFUSE_WAIT_S)
    process.stdout.write(control.frame(SessionFailed(code=int(ErrorCode.UNAUTHORIZED), desc=reason)))
    process.stderr.write(f"fasp-server: {reason}\n".encode())
    process.exit(1)


_HASH_SLOTS = threading.BoundedSemaphore(HASH_CONCURRENCY)
_T = TypeVar("_T")
_N = TypeVar("_N", int, float)


def _bounded(function: Callable[..., _T], *args: object) -> _T:
    """``function(*args)`` holding one of the HASH_CONCURRENCY slots: taken in the worker thread, so an
    abandoned check (its connection gone or its request superseded) still holds its 128 MiB slot until done."""
    with _HASH_SLOTS:
        return function(*args)


def _host_port(peername: tuple[object, ...] | None) -> str:
    """A socket's peer as host:port for the log ("?:?" when it has none)."""
    host, port = (peername or ("?", "?"))[:2]
    return f"{host}:{port}"


def _this_task() -> asyncio.Task[Any]:
    """The task running the caller (a connection or session handler: asyncio runs each as one)."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("called outside an asyncio task")
    return task


@dataclass
class _Waiting:
    """A server engine's registration: the token its client must show, and where to hand that client."""

    token: str
    claimed: asyncio.Future  # -> (reader, writer, bytes read past the request head, "http"/"https")


class FallbackPort:
    """The HTTP(S) fallback port and the private Unix socket where engines register their sessions.

    An engine writes one JSON line (session id, one-time token) and waits; a client's upgrade request
    naming that session with that token claims the registration (once), gets 101, and from then on
    this process relays bytes between the two. Wrong or unknown sessions get 403/404, malformed
    requests 400, and a log line without the token."""

    def __init__(self, cert: str | None, key: str | None, client_ca: str | None = None):
        self._tls: ssl.SSLContext | None = None
        if cert:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
            self._tls.load_cert_chain(cert, key)
            if client_ca:
                self._tls.verify_mode = ssl.CERT_REQUIRED
        self._dir = tempfile.mkdtemp(prefix="fasp-fallback-")  # 0700: only our own engines get in
        self.socket_path = os.path.join(self._dir, "engines.sock")
        self._waiting: dict[str, _Waiting] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._relays: set[asyncio.Task] = set()
        self._heads = 0  # clients whose request head is still coming
        self._flooded = False  # newcomers are being closed (logged once)

    async def start(self, host: str, port: int) -> None:
        self._servers.append(await asyncio.start_unix_server(self._on_engine, self.socket_path))
        self._servers.append(await asyncio.start_server(self._on_client, host, port, ssl=self._tls))
        log.info("HTTP%s fallback on %s:%d", "S" if self._tls else "", host, port)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        shutil.rmtree(self._dir, ignore_errors=True)

    async def _on_engine(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._relays.add(_this_task())
        session = None
        try:
            try:
                entry = json.loads(await asyncio.wait_for(reader.readline(), HEAD_TIMEOUT_S))
                session, token = str(entry["session"]), str(entry["token"])
                if not _SESSION_ID.match(session) or len(token) < 32:
                    raise ValueError("malformed registration")
            except (TimeoutError, ValueError, KeyError, TypeError) as exc:
                log.warning("fallback: bad engine registration (%s)", type(exc).__name__)
                return
            if session in self._waiting:
                writer.write(b'{"ok": false, "error": "session already registered"}\n')
                session = None
                return
            waiting = self._waiting[session] = _Waiting(token, asyncio.get_running_loop().create_future())
            writer.write(b'{"ok": true}\n')
            gone = asyncio.ensure_future(reader.read(1))  # nothing comes before the claim: EOF = engine gone
            await asyncio.wait({gone, waiting.claimed}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.claimed.done():
                gone.cancel()
                return
            gone.cancel()
            client_reader, client_writer, buffered, transport = waiting.claimed.result()
            log.info("fallback: session %s now carried over %s", session[:8], transport)
            writer.write(json.dumps({"ok": True, "transport": transport}).encode() + b"\n" + buffered)
            await _relay(client_reader, client_writer, reader, writer)
        finally:
            if session is not None and session in self._waiting and not self._waiting[session].claimed.done():
                del self._waiting[session]
            writer.close()
            self._relays.discard(asyncio.current_task())

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _host_port(writer.get_extra_info("peername"))
        if self._heads >= FALLBACK_STARTUPS:  # silent connections held open would take every descriptor
            if not self._flooded:  # (and with them SSH logins): one log line per flood
                log.warning("fallback: %d clients still sending their request; closing newcomers", self._heads)
            self._flooded = True
            writer.transport.abort()
            return
        self._heads, self._flooded = self._heads + 1, False
        try:
            head, buffered = await asyncio.wait_for(_read_request(reader), HEAD_TIMEOUT_S)
            session, token, jpeg = httpframes.check_request(head)
        except (TimeoutError, httpframes.HttpWireError, OSError, asyncio.IncompleteReadError) as exc:
            reason = exc.description if isinstance(exc, httpframes.HttpWireError) else type(exc).__name__
            log.warning("fallback: refused %s: %s", peer, reason)
            await _refuse(writer, 400, "bad fallback request")
            return
        finally:
            self._heads -= 1
        waiting = self._waiting.get(session)
        if waiting is None or waiting.claimed.done():
            log.warning("fallback: refused %s: no session %s is waiting", peer, session[:8])
            await _refuse(writer, 404, "unknown session")
            return
        if not hmac.compare_digest(waiting.token.encode(), token.encode()):
            log.warning("fallback: refused %s: wrong token for session %s", peer, session[:8])
            await _refuse(writer, 403, "wrong session token")
            return
        del self._waiting[session]
        writer.write(
            httpframes.response(101, "Switching Protocols", httpframes.JPEG_TYPE if jpeg else httpframes.PLAIN_TYPE)
        )
        waiting.claimed.set_result((reader, writer, buffered, "https" if self._tls else "http"))


_SESSION_ID = re.compile(r"[0-9a-f]{32}\Z")


async def _read_request(reader: asyncio.StreamReader) -> tuple[httpframes.Head, bytes]:
    buffer = b""
    while (found := httpframes.split_head(buffer)) is None:
        data = await reader.read(4096)
        if not data:
            raise httpframes.HttpWireError("connection closed before a whole request head")
        buffer += data
    return httpframes.parse_head(found[0]), found[1]


async def _refuse(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        writer.write(httpframes.response(status, reason))
        await asyncio.wait_for(writer.drain(), 2.0)
    writer.close()


async def _relay(
    reader_a: asyncio.StreamReader,
    writer_a: asyncio.StreamWriter,
    reader_b: asyncio.StreamReader,
    writer_b: asyncio.StreamWriter,
) -> None:
    """Copy both ways until either side ends, then close both."""
    ways = [asyncio.create_task(_pump(reader_a, writer_b)), asyncio.create_task(_pump(reader_b, writer_a))]
    try:
        await asyncio.wait(ways, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in ways:
            task.cancel()
        writer_a.close()
        writer_b.close()


class _Gate(asyncssh.SSHServer):
    """Authentication for one connection: password hash or authorized key, per user."""

    def __init__(self, door: FrontDoor):
        self._door = door
        self._conn: asyncssh.SSHServerConnection | None = None
        self._peer = self._address = "?"
        self._attempts = 0
        self._user: str | None = None  # counted in door.connected once authenticated

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self._peer, self._address = _host_port(peer), peer[0]
        self._door.connections.add(conn)
        cap = self._door.settings.max_startups
        if len(self._door.unauthenticated) >= cap:
            log.warning("refused %s: %d unauthenticated connections already (--max-startups)", self._peer, cap)
            asyncio.get_running_loop().call_soon(  # after our version string, so the client reads why
                conn.disconnect,
                asyncssh.DISC_TOO_MANY_CONNECTIONS,
                "too many unauthenticated connections (max-startups); try again later",
            )
            return
        self._door.unauthenticated.add(conn)

    @property
    def _connection(self) -> asyncssh.SSHServerConnection:
        """The connection given to connection_made, asyncssh's first call: every later one has it."""
        if self._conn is None:
            raise RuntimeError("asyncssh called back before connection_made")
        return self._conn

    def connection_lost(self, exc: Exception | None) -> None:
        self._door.connections.discard(self._conn)
        self._door.unauthenticated.discard(self._conn)
        if self._user is not None:
            self._door.connected[self._user] -= 1
        log.info("connection from %s closed%s", self._peer, f" ({exc})" if exc else "")

    def begin_auth(self, username: str) -> bool:
        keys = self._door.authorized_keys(username)
        if keys is not None:
            self._connection.set_authorized_keys(keys)
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        """Checked at most max_auth_tries times per connection (attempts counted as they come, so
        pipelined ones count too); each failure is answered late, later for an address that keeps failing."""
        self._attempts += 1
        limit = self._door.settings.max_auth_tries
        if self._attempts > limit:
            self._cut_off(limit)
            return False
        accepted = await self._door.check_password(username, password)
        if accepted:
            log.info("password accepted for %s from %s", username, self._peer)
            return True
        metrics.AUTH_FAILURES.labels("password").inc()
        delay = self._door.failure_delay(self._address)
        log.warning(
            "password refused for %r from %s (attempt %d of %d on this connection, answered in %.1f s)",
            username,
            self._peer,
            self._attempts,
            limit,
            delay,
        )
        await asyncio.sleep(delay)
        if self._attempts >= limit:
            self._cut_off(limit)
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Asked only for a key that is not among the user's authorized ones: a failed attempt, counted with
        the passwords against max_auth_tries as sshd counts every method (30 keys on one connection were
        each checked before)."""
        self._attempts += 1
        metrics.AUTH_FAILURES.labels("publickey").inc()
        limit = self._door.settings.max_auth_tries
        log.warning(
            "public key refused for %r from %s (attempt %d of %d on this connection)",
            username,
            self._peer,
            self._attempts,
            limit,
        )
        if self._attempts >= limit:
            self._cut_off(limit)
        return False

    def _cut_off(self, limit: int) -> None:
        log.warning("disconnecting %s: too many authentication failures (%d, --max-auth-tries)", self._peer, limit)
        self._connection.disconnect(
            asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, f"too many authentication failures ({limit}, max-auth-tries)"
        )

    def auth_completed(self) -> None:
        self._door.unauthenticated.discard(self._conn)
        username = self._connection.get_extra_info("username")
        cap = self._door.connection_cap(username)
        if self._door.connected[username] >= cap:
            log.warning(
                "disconnecting %s: %s already holds %d connections (2 x max_sessions)", self._peer, username, cap
            )
            self._connection.disconnect(
                asyncssh.DISC_TOO_MANY_CONNECTIONS,
                f"too many connections for user {username}: {cap} (2 x max_sessions)",
            )
            return
        self._user = username
        self._door.connected[username] += 1
        log.info("authenticated %s from %s", username, self._peer)


def ssh_connection(process: asyncssh.SSHServerProcess) -> dict[str, str]:
    """SSH_CONNECTION as sshd sets it: the engine binds its UDP socket to the address the client reached,
    so a server with several addresses answers from the one the client sends to."""
    peer: tuple[object, ...] = process.get_extra_info("peername") or ()
    local: tuple[object, ...] = process.get_extra_info("sockname") or ()
    if len(peer) < 2 or len(local) < 2:
        return {}
    return {"SSH_CONNECTION": f"{peer[0]} {peer[1]} {local[0]} {local[1]}"}


async def run_engine(
    process: asyncssh.SSHServerProcess,
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    pass_fds: Sequence[int] = (),
    warm: ForkServer | None = None,
) -> None:
    """Run ``argv`` with the channel piped to it until either side ends; never leaves it running. ``pass_fds``:
    descriptors the engine inherits (its usage pipe). With ``warm``, the engine (``argv`` is then
    ENGINE_COMMAND's) is a fork of that warm one instead of an exec."""
    child: Engine | None = None
    if warm is not None:
        try:
            child = await _WarmEngine.fork(warm, argv, cwd, env, pass_fds)
        except OSError as exc:  # no fork server: the session still gets an engine, exec'd
            log.warning("warm engine unavailable (%s): starting %s", exc, argv[0])
    try:
        if child is None:
            child = await asyncio.create_subprocess_exec(
                *argv,
                stdin=PIPE,
                stdout=PIPE,
                stderr=PIPE,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                preexec_fn=_die_with_parent,
                pass_fds=pass_fds,
            )
    except OSError as exc:
        log.error("cannot start the engine %r in %s: %s", argv[0], cwd, exc)
        process.stderr.write(f"fasp-server: cannot start the transfer engine: {exc.strerror}\n".encode())
        process.exit(1)
        return
    log.info(
        "engine pid %d %s: %s",
        child.pid,
        "forked warm" if isinstance(child, _WarmEngine) else "started",
        shlex.join(argv),
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None  # all PIPE
    feed = asyncio.create_task(_pump(process.stdin, child.stdin, close_target=True))
    outputs = [
        asyncio.create_task(_pump(child.stdout, process.stdout)),
        asyncio.create_task(_pump(child.stderr, process.stderr)),
    ]
    exited = asyncio.create_task(child.wait())
    closed = asyncio.create_task(process.wait_closed())
    try:
        await asyncio.wait({exited, closed}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            await asyncio.wait(outputs, timeout=STOP_GRACE_S)
            code = exited.result()
            status = code if code >= 0 else 128 - code
            log.info("engine pid %d exited with %d", child.pid, code)
            process.exit(status)
        else:
            log.info("channel closed: stopping engine pid %d", child.pid)
    finally:
        for task in (feed, *outputs, exited, closed):
            task.cancel()
        await _stop(child)


class _Source(Protocol):
    """The read side of a pipe, a socket or an SSH channel."""

    async def read(self, n: int) -> bytes: ...


class _Sink(Protocol):
    """The write side, with back-pressure."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...


async def _pump(source: _Source, target: _Sink, close_target: bool = False) -> None:
    """Copy bytes from a reader to a writer with back-pressure, until EOF or either side breaks."""
    try:
        while data := await source.read(CHUNK):
            target.write(data)
            await target.drain()
        if close_target:
            target.close()
    except (asyncssh.Error, OSError):  # ConnectionError, BrokenPipeError, ssl.SSLError (fallback relay)
        pass


async def _stop(child: Engine) -> None:
    """SIGTERM the engine's process group, then SIGKILL it if it lingers; always reap."""
    if child.returncode is None:
        _signal_group(child, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(child.wait()), STOP_GRACE_S)
        except TimeoutError:
            log.warning("engine pid %d ignored SIGTERM: killing it", child.pid)
    _signal_group(child, signal.SIGKILL)  # also whatever the engine spawned
    await child.wait()


def _signal_group(child: Engine, sig: int) -> None:
    if isinstance(child, _WarmEngine):
        child.forked.signal_group(sig)  # the fork server signals it only while it has not reaped it
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)


class _WarmEngine:
    """An engine forked by the fork server, with the face of ``asyncio.subprocess.Process`` that
    ``run_engine`` uses: pid, stdio streams, returncode, ``wait()``."""

    def __init__(
        self,
        forked: ForkedProcess,
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
    ) -> None:
        self.forked = forked
        self.pid = forked.pid
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._fd = forked.fileno()
        asyncio.get_running_loop().add_reader(self._fd, self._check)

    @property
    def returncode(self) -> int | None:
        return self.forked.returncode

    @classmethod
    async def fork(
        cls, warm: ForkServer, argv: Sequence[str], cwd: str, env: Mapping[str, str], keep: Sequence[int] = ()
    ) -> _WarmEngine:
        theirs: list[int] = []  # the fork's stdin read end, stdout and stderr write ends
        ours: list[int] = []  # the other ends, this side's until wrapped in files just below
        try:
            for stream in range(3):
                read_end, write_end = os.pipe()
                theirs.append(read_end if stream == 0 else write_end)
                ours.append(write_end if stream == 0 else read_end)
            command = ["fasp-ascp", *argv[len(ENGINE_COMMAND) :]]
            forked = warm.spawn(command, env, theirs[0], theirs[1], theirs[2], cwd, keep)
        except BaseException:  # EMFILE on the third pipe, the fork server gone: none of them outlives this
            for fd in ours:
                os.close(fd)
            raise
        finally:  # each descriptor closed once: closed twice, the second may hit another thread's new one
            for fd in theirs:
                os.close(fd)
        # as files at once, each closed with its file object whatever happens to the connections below
        stdin_file, stdout_file, stderr_file = open(ours[0], "wb", 0), open(ours[1], "rb", 0), open(ours[2], "rb", 0)
        loop = asyncio.get_running_loop()
        stdin_transport, stdin_protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdin_file)
        stdout, stderr = asyncio.StreamReader(), asyncio.StreamReader()
        for reader, pipe in ((stdout, stdout_file), (stderr, stderr_file)):
            await loop.connect_read_pipe(functools.partial(asyncio.StreamReaderProtocol, reader), pipe)
        return cls(forked, asyncio.StreamWriter(stdin_transport, stdin_protocol, None, loop), stdout, stderr)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._fd)  # before poll() closes the connection that delivers the status
        code = self.forked.poll()
        if code is None:  # woken early: wait on
            loop.add_reader(self._fd, self._check)
        elif not self._exited.done():
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


Engine = asyncio.subprocess.Process | _WarmEngine
"""A session's engine process: exec'd, or forked warm."""


_prctl = ctypes.CDLL(None, use_errno=True).prctl
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: if fasp-server itself dies (even SIGKILL), the engine gets SIGTERM."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def load_host_key(path: str | None) -> asyncssh.SSHKey:
    """The host key in ``path`` (generated there on first use), or a fresh one kept in memory."""
    if path is None:
        return asyncssh.generate_private_key("ssh-ed25519")
    if os.path.exists(path):
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key())
    return key


def port_number(lowest: int) -> Callable[[str], int]:
    """An argparse type: a port number from ``lowest`` to 65535 (an option taking one out of range is a
    usage error, not an OverflowError from bind() or an engine refusing its -O in every session)."""

    def parse(text: str) -> int:
        if not text.isdigit() or not lowest <= int(text) <= 65535:
            raise argparse.ArgumentTypeError(f"{text!r} is not a port number in {lowest}..65535")
        return int(text)

    return parse


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (or [V6]:PORT) -> (host, port): the argparse type of --listen."""
    host, sep, number = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"wants HOST:PORT, got {text!r}")
    return host.strip("[]"), port_number(0)(number)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fasp-server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--listen", required=True, type=parse_listen, metavar="HOST:PORT", help="port 0 picks a free port"
    )
    parser.add_argument("--users", metavar="FILE", help="users file (see fasp.server.users)")
    quick = parser.add_argument_group("quick mode (one user, instead of --users)")
    quick.add_argument("--user", metavar="NAME")
    quick.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    quick.add_argument("--docroot", metavar="DIR", help="created if missing")
    quick.add_argument("--authorized-keys", metavar="FILE", help="OpenSSH authorized_keys file")
    quick.add_argument("--rate-cap", type=int, metavar="KBPS")
    quick.add_argument("--allowed-policies", metavar="LIST", help="comma-separated, e.g. fair,low")
    parser.add_argument(
        "--udp-port", type=port_number(1), metavar="N", help="UDP port for the engines (-O); default: any"
    )
    parser.add_argument(
        "--http-port",
        type=port_number(0),
        metavar="N",
        help="HTTP fallback port on the --listen host, for clients whose UDP is blocked (-y 1)",
    )
    parser.add_argument("--https-cert", metavar="FILE", help="with --https-key: TLS on the fallback port")
    parser.add_argument("--https-key", metavar="FILE", help="private key of --https-cert")
    parser.add_argument(
        "--https-client-ca",
        metavar="FILE",
        help="mutual TLS: fallback clients must present a certificate (ascp -I/-Y) this file vouches for",
    )
    parser.add_argument("--host-key", metavar="FILE", help="host key (generated there if missing; default: in memory)")
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        help="where a client's -R session log goes (DIR/USER/, names the server picks); "
        "without it a client's -R is ignored",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-auth-tries",
        type=_positive(int),
        default=6,
        metavar="N",
        help="password attempts per connection before it is closed (default: %(default)s)",
    )
    limits.add_argument(
        "--auth-delay",
        type=_positive(float),
        default=0.5,
        metavar="S",
        help="delay before a failure is answered, doubling per further failure from the same "
        f"address, at most {AUTH_DELAY_MAX_S:g} s (default: %(default)s)",
    )
    limits.add_argument(
        "--login-grace-time",
        type=_positive(float),
        default=30.0,
        metavar="S",
        help="seconds a connection may take to authenticate (default: %(default)s)",
    )
    limits.add_argument(
        "--max-startups",
        type=_positive(int),
        default=10,
        metavar="N",
        help="unauthenticated connections at once; more are refused (default: %(default)s)",
    )
    limits.add_argument(
        "--max-sessions",
        type=_positive(int),
        default=16,
        metavar="N",
        help="concurrent sessions per user unless users.toml sets max_sessions (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=port_number(0),
        metavar="N",
        help="serve Prometheus metrics (sessions per user, authentication failures, bytes by direction) on "
        "this port, 0 picks a free one (logged); default: off",
    )
    parser.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        metavar="ADDR",
        help="address of --metrics-port (default: %(default)s)",
    )
    parser.add_argument(
        "--cold-engines",
        action="store_true",
        help="exec a new engine process per session instead of forking it from a warm one "
        "(the default with the default --engine-command)",
    )
    parser.add_argument(
        "--engine-command",
        metavar="CMD",
        default=shlex.join(ENGINE_COMMAND),
        help="server-mode engine command, before '--server --docroot ...' (default: %(default)s)",
    )
    return parser


def _positive(kind: type[_N]) -> Callable[[str], _N]:
    def parse(text: str) -> _N:
        value = kind(text)
        if value <= 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


QUICK_FLAGS = ("password_env", "docroot", "authorized_keys", "rate_cap", "allowed_policies")


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Settings from the command line; raises UsersFileError (a ValueError) on bad input."""
    if bool(args.users) == bool(args.user):
        raise UsersFileError("give either --users FILE or --user NAME (quick mode)")
    secret_vars: tuple[str, ...] = ()
    if args.users:
        quick = [flag for flag in QUICK_FLAGS if getattr(args, flag) is not None]
        if quick:
            raise UsersFileError(f"--{quick[0].replace('_', '-')} is for quick mode; with --users it is in the file")
        users = load_users(args.users)
    else:
        if not args.docroot or not (args.password_env or args.authorized_keys):
            raise UsersFileError("quick mode needs --docroot and --password-env and/or --authorized-keys")
        password_hash = None
        if args.password_env:
            if args.password_env not in environ:
                raise UsersFileError(f"environment variable {args.password_env} is not set")
            if weakness := password_weakness(environ[args.password_env]):
                raise UsersFileError(
                    f"refusing to start: {weakness} (--password-env {args.password_env}; {PASSWORD_RULE})"
                )
            password_hash = hash_password(environ[args.password_env])
            secret_vars = (args.password_env,)
        docroot = os.path.abspath(args.docroot)
        os.makedirs(docroot, exist_ok=True)
        keys = read_public_keys(Path(args.authorized_keys).read_text()) if args.authorized_keys else ()
        users = {
            args.user: User(
                name=args.user,
                docroot=docroot,
                password_hash=password_hash,
                authorized_keys=keys,
                rate_cap_kbps=args.rate_cap,
                allowed_policies=tuple(args.allowed_policies.split(",")) if args.allowed_policies else None,
            )
        }
    if bool(args.https_cert) != bool(args.https_key) or (args.https_cert and args.http_port is None):
        raise UsersFileError("--https-cert and --https-key go together, with --http-port")
    if args.https_client_ca and not args.https_cert:
        raise UsersFileError("--https-client-ca needs --https-cert")
    return Settings(
        users=users,
        users_file=args.users,
        engine_command=tuple(shlex.split(args.engine_command)),
        udp_port=args.udp_port,
        child_env=child_environment(environ, secret_vars),
        http_port=args.http_port,
        https_cert=args.https_cert,
        https_key=args.https_key,
        https_client_ca=args.https_client_ca,
        log_dir=os.path.abspath(args.log_dir) if args.log_dir else None,
        max_auth_tries=args.max_auth_tries,
        auth_delay_s=args.auth_delay,
        login_grace_s=args.login_grace_time,
        max_startups=args.max_startups,
        max_sessions=args.max_sessions,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        warm_engines=not args.cold_engines,
    )


async def serve(settings: Settings, host: str, port: int, host_key: asyncssh.SSHKey) -> None:
    """Run the front door until SIGTERM or SIGINT; SIGHUP re-reads the users file."""
    door = FrontDoor(settings, host_key)
    host, port = await door.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, door.reload_users)  # always: its default action would end every session
    log.info("host key %s, users: %s", host_key.get_fingerprint("sha256"), ", ".join(settings.users))
    print(f"listening on {f'[{host}]' if ':' in host else host}:{port}", flush=True)  # an IPv6 HOST in brackets
    await stop.wait()
    log.info("shutting down (%d sessions)", door.session_count)
    await door.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log_to_stderr("%(asctime)s fasp-server[%(process)d] %(levelname)s %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        host, port = args.listen
        settings = settings_from_args(args, os.environ)
        host_key = load_host_key(args.host_key)
        # the password is hashed in memory now: blank it where any process of this user could read it
        scrub_initial_environment(lambda name: name == args.password_env or name.startswith("ASPERA_SCP_"))
    except (ValueError, OSError, asyncssh.KeyImportError) as exc:
        print(f"fasp-server: {exc}", file=sys.stderr)
        return 2
    if settings.metrics_port is not None:
        try:
            endpoint, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_address)
        except OSError as exc:
            print(
                f"fasp-server: cannot serve metrics on {settings.metrics_address}:{settings.metrics_port}: "
                f"{exc.strerror}",
                file=sys.stderr,
            )
            return 1
        where, bound = str(endpoint.server_address[0]), endpoint.server_address[1]
        log.info("fasp-server metrics on http://%s:%d/metrics", f"[{where}]" if ":" in where else where, bound)
    try:
        asyncio.run(serve(settings, host, port, host_key))
    except OSError as exc:
        print(f"fasp-server: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
