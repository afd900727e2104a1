"""The client side of a session: SSH to the peer, start its server mode, open the data channel, move files.

One :class:`ClientSession` per process. Its life: INIT, SSH connect (password,
host key checked against known_hosts or the --check-sshfp pin), remote ``--server`` over the SSH channel,
hello/welcome on the control channel (each end's key share travels only there), UDP
transport, SESSION, then the work (upload, download, persistent START items or
a stream), then bye and DONE, or ERROR with a code. Every failure, including
CANCEL and a vanished manager, funnels through one future so the session ends
the same way whatever happened, and the peer process ends with our channel.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shlex
import time
import uuid
from collections import defaultdict
from typing import Callable

import asyncssh
from asyncssh.public_key import get_default_certificate_algs, get_default_public_key_algs

from faspmanager import mgmt
from faspmanager.codes import EngineError, ErrorCode
from fasp.errors import ProtocolError

from fasp.session import control
from fasp.files import docroot
from fasp.session.channel import Channel
from fasp.datapath.datachannel import DataChannel
from fasp.datapath.httpchannel import FallbackTransport, dial
from fasp.files.jobs import FileJob, Problem, Rules, top_name, walk
from fasp.options.flags import POLICIES, Config
from fasp.session.receiving import ReceivingRole
from fasp.datapath.seal import SHARE_BYTES, SessionKey
from fasp.session.sending import SendingRole
from fasp.session.stream import OutStream
from fasp.session.tally import Tally
from fasp.datapath.rate import CEILING_KBPS
from fasp.datapath.udpchannel import RateSettings, Transport

log = logging.getLogger("fasp.session.client")
REMOTE_COMMAND = "fasp-ascp --server"
CONNECT_TIMEOUT = 15.0
WELCOME_TIMEOUT = 20.0
BYE_TIMEOUT = 5.0
UDP_TRY_WITH_FALLBACK = 3.0  # with -y 1, how long the UDP handshake may take before HTTP takes over
STATS_INTERVAL = 0.5

Emit = Callable[[str, dict], None]


KNOWN_HOSTS_ENV = "FASP_KNOWN_HOSTS"
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")


def known_hosts_files() -> list[str]:
    """Where trusted host keys are listed: $FASP_KNOWN_HOSTS alone if set, else OpenSSH's user and system files."""
    explicit = os.environ.get(KNOWN_HOSTS_ENV)
    return [explicit] if explicit else [os.path.expanduser(path) for path in DEFAULT_KNOWN_HOSTS]


def _read_known_hosts(files: list[str]) -> asyncssh.SSHKnownHosts:
    """The entries of every readable file (a missing one is empty, as for ssh); a malformed file is code 51."""
    text = b""
    for path in files:
        try:
            with open(path, "rb") as handle:
                text += handle.read() + b"\n"
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise EngineError(ErrorCode.INSECURE_CONNECTION, f"cannot read {path}: {exc.strerror}") from None
    try:
        return asyncssh.import_known_hosts(text.decode("utf-8", "replace"))
    except (ValueError, asyncssh.KeyImportError) as exc:
        raise EngineError(ErrorCode.INSECURE_CONNECTION, f"malformed known_hosts ({', '.join(files)}): {exc}") from None


def sshfp_matches(key: asyncssh.SSHKey, pin: str) -> bool:
    """Whether ``key`` has the fingerprint ``pin`` (SHA256:base64, with or without the prefix, or MD5 hex)."""
    want = pin.strip()
    if want.upper().startswith("MD5:") or (":" in want and not want.upper().startswith("SHA256:")):
        return key.get_fingerprint("md5").lower().removeprefix("md5:") == want.lower().removeprefix("md5:")
    got = key.get_fingerprint("sha256").removeprefix("SHA256:")
    return got.rstrip("=") == want.removeprefix("SHA256:").removeprefix("sha256:").rstrip("=")


class _HostKeyCheck(asyncssh.SSHClient):
    """asyncssh asks this about a host key that known_hosts does not list (with a pin, nothing is listed):
    it is trusted only if it has the --check-sshfp fingerprint; otherwise it is kept for the error message.
    asyncssh decides during the key exchange, so a refused server never sees an authentication request."""

    def __init__(self, pin: str | None) -> None:
        self.pin = pin
        self.refused: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host, addr, port, key) -> bool:
        if self.pin is not None and sshfp_matches(key, self.pin):
            return True
        self.refused = key
        return False


def _listed_keys(known: asyncssh.SSHKnownHosts | None, remote) -> list[asyncssh.SSHKey]:
    """The keys known_hosts lists for the peer (``[host]:port``, else ``host``, as asyncssh matches)."""
    return list(known.match(remote.host, "", remote.port if remote.port != 22 else None)[0]) if known else []


def _host_key_algs(listed: list[asyncssh.SSHKey]) -> list[str]:
    """The listed keys' algorithms first, then every other one (as OpenSSH orders them): asyncssh alone would
    offer only the listed ones, so a server whose key changed type would fail the key exchange, not code 51."""
    algs = [alg for key in listed for alg in key.sig_algorithms]
    algs += get_default_certificate_algs() + get_default_public_key_algs()
    return [alg.decode() for alg in dict.fromkeys(algs)]


def _host_key_error(remote, check: _HostKeyCheck, known: asyncssh.SSHKnownHosts | None,
                    files: list[str], reason: str) -> EngineError:
    """Code 51 naming the host, the key it offered and why it is not trusted."""
    name = remote.host if remote.port == 22 else f"[{remote.host}]:{remote.port}"
    key = check.refused
    offered = f"{key.get_algorithm()} {key.get_fingerprint('sha256')}" if key is not None else "its host key"
    if key is None:  # refused before asking us: a revoked key or a certificate known_hosts does not trust
        why = f"is not trusted: {reason}"
    elif check.pin is not None:
        why = f"does not match --check-sshfp {check.pin}"
    elif _listed_keys(known, remote):
        why = (f"is NOT the key listed for it in {', '.join(files)}: the host key has CHANGED "
               f"(or someone is impersonating the host)")
    else:
        why = (f"is not in {', '.join(files)} (add it, pin it with --check-sshfp, "
               f"or skip the check with --ignore-host-key)")
    return EngineError(ErrorCode.INSECURE_CONNECTION, f"host key of {name}: {offered} {why}")


async def open_ssh(cfg: Config) -> asyncssh.SSHClientConnection:
    """An authenticated SSH connection to the peer, or EngineError with the ascp code for the failure.

    The host key is checked as OpenSSH does (known_hosts, see :func:`known_hosts_files`), or against the
    --check-sshfp pin, before any credential is offered; --ignore-host-key alone skips the check."""
    remote = cfg.remote
    options: dict = dict(host=remote.host, port=remote.port, username=remote.user, agent_path=None)
    check = _HostKeyCheck(None if remote.ignore_host_key else remote.check_sshfp)
    known, files = None, known_hosts_files()
    if remote.ignore_host_key:
        options["known_hosts"] = None
    elif remote.check_sshfp:
        options.update(known_hosts=([], [], []), client_factory=lambda: check)
    else:
        known = _read_known_hosts(files)
        options.update(known_hosts=known, client_factory=lambda: check,
                       server_host_key_algs=_host_key_algs(_listed_keys(known, remote)))
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
    if not keys and remote.password is None:
        options["client_keys"] = None  # default ~/.ssh keys, as ssh would
    try:
        return await asyncio.wait_for(asyncssh.connect(**options), CONNECT_TIMEOUT)
    except asyncssh.PermissionDenied:
        raise EngineError(ErrorCode.AUTH, f"authentication failed for {remote.user}@{remote.host}") from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise _host_key_error(remote, check, known, files, exc.reason) from None
    except asyncio.TimeoutError:
        raise EngineError(ErrorCode.TRANSFER_TIMEOUT, f"no SSH answer from {remote.host}:{remote.port}") from None
    except (OSError, asyncssh.Error) as exc:
        raise EngineError(ErrorCode.TRANSFER_ERROR, f"cannot reach {remote.host}:{remote.port}: {exc}") from None


class ClientSession:
    def __init__(self, cfg: Config, emit: Emit) -> None:
        self.cfg = cfg
        self.session_id = uuid.uuid4().hex
        self.tally = Tally(emit, self.session_id, cfg.file_checksum)
        # --auto-detect-capacity: -l is a percent of the capacity, under the engine's own ceiling
        self._rate = (RateSettings(CEILING_KBPS, cfg.min_kbps, cfg.policy, percent=cfg.target_kbps)
                      if cfg.auto_capacity else RateSettings(cfg.target_kbps, cfg.min_kbps, cfg.policy))
        self._capacity_kbps: int | None = None  # measured by the sending side (the peer's, in a download)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._proc = None
        self._channel: Channel | None = None
        self._transport: DataChannel | None = None
        self._carrier = "udp"  # what SESSION reports: udp, http or https
        self._sender: SendingRole | None = None
        self._receiver: ReceivingRole | None = None
        self._failure: asyncio.Future | None = None
        self._connected = asyncio.Event()
        self._items: asyncio.Queue = asyncio.Queue()
        self._next_arg = 0
        self._args_done: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._listings: dict[int, dict] = {}
        self._held: list[dict] | None = None  # download file offers held until the job size is out
        self._stream: OutStream | None = None
        self._bye = asyncio.Event()
        self._remote_err = bytearray()
        self._stderr_task: asyncio.Task | None = None
        self._rate_seq = 0

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """The whole session, ending with DONE (returns) or ERROR (raises EngineError, after cleanup)."""
        self._failure = asyncio.get_running_loop().create_future()
        cfg = self.cfg
        self.tally.emit("INIT", {
            "Direction": "Send" if cfg.direction == "send" else "Receive", "Host": cfg.remote.host,
            "User": cfg.remote.user, "Port": cfg.remote.port, "UdpPort": cfg.udp_port,
            "Rate": cfg.target_kbps, "MinRate": cfg.min_kbps, "Policy": cfg.policy.upper(),
            "Encryption": cfg.key_bytes > 0, "Cipher": cfg.cipher, "Keepalive": cfg.keepalive,
            "Cookie": cfg.cookie, "RetryTimeout": cfg.retry_timeout, "DatagramSize": cfg.datagram_size})
        reader = stats = None
        ok = listed = False
        try:
            await self._race(self._connect())
            reader = asyncio.create_task(self._control_reader())
            stats = asyncio.create_task(self._stats_loop())
            await self._race(self._work())
            if cfg.manifest_dir:  # before the outcome: a session that ends 27 lists its failed files too
                listed = True
                self._write_manifest(cfg.manifest_dir)
            outcome = self.tally.session_outcome()
            if outcome is not None:
                raise EngineError(*outcome)
            ok = True
        except Exception as exc:
            error = _as_engine_error(exc)
            if not isinstance(exc, EngineError):
                log.exception("internal error")
            # the manager hears at once; cleaning up may take a moment more
            self.tally.emit("ERROR", {"Code": error.code, "Description": error.description,
                                      **self.tally.done_fields()})
            if cfg.manifest_dir and not listed and self._connected.is_set():  # cancelled, peer gone...
                self.tally.interrupted(error.code, error.description)
                with contextlib.suppress(EngineError):
                    self._write_manifest(cfg.manifest_dir)
            raise error from None
        finally:
            if stats is not None:
                stats.cancel()
            await self._shutdown(ok)  # the control reader still runs: it must hear the peer's "bye"
            if reader is not None:
                reader.cancel()
        self.tally.emit("DONE", self.tally.done_fields())

    def _write_manifest(self, directory: str) -> None:
        """--file-manifest=text: every file of the session, one line each, in the order they ended:
        ``OUTCOME<TAB>PATH`` for a passed file, ``OUTCOME<TAB>PATH<TAB>DETAIL`` for a skipped one (the
        reason) or a failed one (the error code, a space, the description). OUTCOME is passed, skipped
        or failed; PATH is where the file was read (upload) or landed (download). A tab, newline,
        carriage return or backslash inside a field is written as \\t, \\n, \\r or \\\\."""
        def field(text: str) -> str:
            return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

        path = os.path.join(directory, f"aspera-transfer-{self.session_id}-manifest.txt")
        try:
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
                handle.writelines("\t".join(field(part) for part in (outcome, name, detail) if part) + "\n"
                                  for outcome, name, detail in self.tally.outcomes)
        except OSError as exc:
            raise EngineError(ErrorCode.DISK_WRITE, f"cannot write the manifest {path}: {exc.strerror}") from None

    def fail(self, error: EngineError) -> None:
        """End the session with ``error`` (CANCEL, manager gone, peer gone...); the first failure wins."""
        if self._failure is not None and not self._failure.done():
            self._failure.set_exception(error)
            self._failure.exception()  # retrieved: a failure after the session ended needs no traceback

    async def _race(self, coro) -> None:
        """Run ``coro`` unless the session fails first."""
        task = asyncio.ensure_future(coro)
        await asyncio.wait({task, self._failure}, return_when=asyncio.FIRST_COMPLETED)
        if self._failure.done():
            task.cancel()
            try:
                await task
            except BaseException:
                pass
            self._failure.result()
        task.result()

    async def _connect(self) -> None:
        cfg = self.cfg
        self._conn = await open_ssh(cfg)
        command = os.environ.get("FASP_REMOTE_COMMAND", REMOTE_COMMAND)
        command = f"{command} --server" if "--server" not in shlex.split(command) else command
        try:
            self._proc = await self._conn.create_process(command, encoding=None)
        except asyncssh.Error as exc:
            raise EngineError(ErrorCode.TRANSFER_ERROR, f"cannot start the remote engine: {exc}") from None
        self._channel = Channel(self._proc.stdout, self._proc.stdin)
        self._stderr_task = asyncio.create_task(self._collect_stderr())
        share = os.urandom(SHARE_BYTES)
        await self._channel.send(
            "hello", v=control.VERSION, session=self.session_id, share=share.hex(), key_bytes=cfg.key_bytes,
            direction=cfg.direction, dest=cfg.dest, datagram_size=cfg.datagram_size, udp_port=cfg.udp_port,
            rate=self._rate_dict(), opts=cfg.options_for_peer(), token=cfg.token)
        welcome = await self._answer("welcome", "the session", ErrorCode.TRANSFER_TIMEOUT, ErrorCode.TRANSFER_ERROR)
        if welcome["v"] != control.VERSION:
            raise ProtocolError(f"the remote engine speaks control version {welcome['v']}")
        self._rate = RateSettings(**_rate_from(welcome["rate"]))
        key = SessionKey.derive(share, control.share(welcome), bytes.fromhex(self.session_id), cfg.key_bytes)
        self._transport = await self._open_data_channel(welcome["udp_port"], key)
        if cfg.direction == "send":
            self._sender = SendingRole(self._channel, self._transport, self.tally, cfg.local_options(),
                                  files=self._files, file_pass=cfg.file_pass)
        else:
            self._receiver = ReceivingRole(self._channel, self._transport, self.tally, cfg.local_options(),
                                      dest=cfg.dest, files=self._files, file_pass=cfg.file_pass)
            self._receiver.on_fatal = lambda exc: self.fail(_as_engine_error(exc))
        self._connected.set()
        self.tally.emit("SESSION", {
            "Transport": self._carrier, "Host": cfg.remote.host, "RemoteAddress": cfg.remote.host,
            "Port": welcome["udp_port"] if self._carrier == "udp" else cfg.http_port,
            "DatagramSize": cfg.datagram_size, "PMTU": cfg.datagram_size,
            "Rate": self._rate.target_kbps, "MinRate": self._rate.min_kbps,
            "Policy": self._rate.policy.upper(), "Encryption": cfg.key_bytes > 0})

    async def _answer(self, expected: str, request: str, silent: ErrorCode, closed: ErrorCode) -> dict:
        """The peer engine's answer to ``request``: a message of type ``expected``, or the EngineError its
        error message names, or ``silent``/``closed`` (with its last words) when it says nothing or goes away."""
        try:
            answer = await asyncio.wait_for(self._channel.recv(), WELCOME_TIMEOUT)
        except asyncio.TimeoutError:
            raise EngineError(silent, f"the remote engine did not answer {request}") from None
        if answer is None:
            await asyncio.sleep(0.2)  # let its last words arrive on stderr
            raise EngineError(closed, f"the remote engine closed the session instead of answering {request}: "
                                      f"{self._remote_stderr() or 'no reason given'}")
        if answer["t"] == "error":
            raise EngineError(answer["code"], answer["desc"])
        if answer["t"] != expected:
            raise ProtocolError(f"unexpected answer to {request} from the remote engine: {answer['t']}")
        return answer

    async def _open_data_channel(self, udp_port: int, key: SessionKey) -> DataChannel:
        """UDP, or with -y 1 HTTP(S) when the UDP handshake gets no answer (a firewall, most likely)."""
        try:
            return await self._open_udp(udp_port, key)
        except EngineError as exc:
            if not self.cfg.http_fallback or exc.code not in (ErrorCode.CONNECTION_TIMEOUT,
                                                              ErrorCode.CONNECTION_ERROR):
                raise
            log.info("UDP data channel failed (%s): trying the HTTP fallback", exc.description)
        return await self._open_fallback(key)

    async def _open_fallback(self, key: SessionKey) -> FallbackTransport:
        """Ask the peer engine to expect us on its fallback port, then dial it (code 47 if that fails)."""
        cfg = self.cfg
        await self._channel.send("fallback", jpeg=cfg.jpeg)
        answer = await self._answer("fallback_ok", "the HTTP fallback request", ErrorCode.CONNECTION_ERROR_HTTP,
                                    ErrorCode.CONNECTION_ERROR_HTTP)
        reader, writer, buffered, self._carrier = await dial(
            cfg.remote.host, cfg.http_port, session_id=self.session_id, token=answer["token"], jpeg=cfg.jpeg,
            cafile=cfg.https_cert, keyfile=cfg.https_key, proxy=cfg.proxy)
        return FallbackTransport(reader, writer, session_id=bytes.fromhex(self.session_id), key=key, direction=0,
                                 jpeg=cfg.jpeg, rate=self._rate, name=self._carrier, buffered=buffered)

    async def _open_udp(self, udp_port: int, key: SessionKey) -> Transport:
        """Handshake on UDP while watching the control channel: the peer is silent there until we
        speak, so anything it says meanwhile (an error, or closing) explains a handshake that fails."""
        cfg = self.cfg
        attempt = {"timeout": UDP_TRY_WITH_FALLBACK} if cfg.http_fallback else {}
        connect = asyncio.ensure_future(Transport.connect(
            cfg.remote.host, udp_port, session_id=bytes.fromhex(self.session_id), key=key,
            datagram_size=cfg.datagram_size, rate=self._rate, **attempt))
        peer = asyncio.ensure_future(self._channel.recv())
        await asyncio.wait({connect, peer}, return_when=asyncio.FIRST_COMPLETED)
        if connect.done():
            peer.cancel()
            try:
                return connect.result()
            except EngineError as exc:
                detail = self._remote_stderr()
                raise EngineError(exc.code, f"{exc.description}{'; peer: ' + detail if detail else ''}") from None
        connect.cancel()
        msg = peer.result()
        if msg is not None and msg["t"] == "error":
            raise EngineError(msg["code"], msg["desc"])
        await asyncio.sleep(0.2)  # let its last words arrive on stderr
        raise EngineError(ErrorCode.TRANSFER_ERROR, f"the remote engine ended the session before the data channel "
                                                    f"opened: {self._remote_stderr() or (msg or {}).get('t', 'closed')}")

    async def _shutdown(self, ok: bool) -> None:
        """Say bye (or cancel) to the peer and free everything; never raises."""
        try:
            if self._stream is not None and not ok:
                await self._stream.abort()
            if self._channel is not None:
                try:
                    if ok:
                        await asyncio.wait_for(self._say_bye(), BYE_TIMEOUT)
                    else:
                        await asyncio.wait_for(self._channel.send("cancel"), 1.0)
                except (Exception, asyncio.TimeoutError):
                    pass
                self._channel.close()
            if self._transport is not None:
                await self._transport.close()
        finally:
            if self._proc is not None:
                self._proc.close()
            if self._conn is not None:
                self._conn.close()
                try:
                    await asyncio.wait_for(self._conn.wait_closed(), 2.0)
                except (Exception, asyncio.TimeoutError):
                    pass

    async def _say_bye(self) -> None:
        await self._channel.send("bye")
        await self._bye.wait()

    async def _collect_stderr(self) -> None:
        try:
            while True:
                data = await self._proc.stderr.read(4096)
                if not data:
                    return
                self._remote_err += data
                del self._remote_err[:-4096]
        except Exception:  # the channel is gone: nothing more to read
            return

    def _remote_stderr(self) -> str:
        """The peer's last line of stderr: the reason it gave before going away."""
        lines = self._remote_err.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    # ---- control channel ----------------------------------------------------------------------------

    async def _control_reader(self) -> None:
        try:
            while True:
                msg = await self._channel.recv()
                if msg is None:
                    if not self._bye.is_set():
                        self.fail(EngineError(ErrorCode.CONNECTION_LOST,  # the peer engine or its SSH is gone
                                              f"control connection lost: {self._remote_stderr() or 'peer closed'}"))
                    return
                self._on_message(msg)
        except EngineError as exc:
            self.fail(exc)
        except (asyncssh.Error, OSError) as exc:
            self.fail(EngineError(ErrorCode.CONNECTION_LOST, f"control connection lost: {exc}"))

    def _on_message(self, msg: dict) -> None:
        kind = msg["t"]
        if kind == "bye":
            self._bye.set()
        elif kind == "error":
            self.fail(EngineError(msg["code"], msg["desc"]))
        elif kind == "cancel":
            self.fail(EngineError(ErrorCode.PEER_ABORTED_SESSION, "the peer cancelled the session"))
        elif kind == "listed":
            self._listings[msg["arg"]] = msg
            self._release_when_listed()
        elif kind == "file" and self._held is not None:
            self._held.append(msg)
        elif kind == "argdone":
            self._args_done[msg["arg"]].set()
        elif kind == "ferror" and msg["fid"] is None:  # a source the peer could not even offer
            self._report_problem(Problem(msg["arg"], msg["path"], msg["code"], msg["desc"],
                                         skip=bool(msg.get("skip"))))
        elif kind == "rate":
            if "capacity" in msg:  # the peer's sender measured the path (--auto-detect-capacity)
                self._capacity_kbps = int(msg["capacity"])
            elif msg.get("seq") == self._rate_seq:  # the peer's caps applied to our latest change
                self._rate = RateSettings(**_rate_from(msg))
                self._transport.set_rate(self._rate)
        else:
            role = self._sender or self._receiver
            if not role.deliver(msg):
                self.fail(ProtocolError(f"unexpected {kind} message for file {msg.get('fid')}"))

    # ---- work ---------------------------------------------------------------------------------------

    async def _work(self) -> None:
        cfg = self.cfg
        if cfg.sources:
            if cfg.direction == "send":
                await self._upload_args()
            else:
                await self._download_args()
        if cfg.keepalive or (not cfg.sources and cfg.mgmt_port is not None):
            while True:
                item = await self._items.get()
                if item is None:
                    break
                await item
        if self._receiver is not None:
            await self._receiver.idle()

    async def _upload_args(self) -> None:
        cfg = self.cfg
        rules = Rules.from_opts(cfg.local_options())
        lone = cfg.lone
        self._next_arg = len(cfg.sources)
        walks = [self._walk_local(arg, source, top_name(source, cfg.src_base, cfg.pair_dests[arg]
                                                        if cfg.pair_dests is not None else None), lone, rules)
                 for arg, source in enumerate(cfg.sources)]
        if cfg.precalculate:
            walks = [await asyncio.to_thread(list, items) for items in walks]
            jobs = [j for items in walks for j in items if isinstance(j, FileJob)]
            self._notify_job_size(files=sum(not j.is_dir for j in jobs), dirs=sum(j.is_dir for j in jobs),
                                  nbytes=sum(j.size for j in jobs))
        for arg, items in enumerate(walks):
            await self._upload(arg, items)
            with contextlib.suppress(EngineError):  # a source outside the local docroot was never read
                self._sender.finish_arg(cfg.sources[arg])

    @functools.cached_property
    def _files(self) -> docroot.Files:
        """Local paths as given, or confined to FASP_LOCAL_DOCROOT with --apply-local-docroot: one handle
        every local file operation goes through, as on a server."""
        return docroot.handle(self.cfg.local_docroot)

    def _walk_local(self, arg: int, source: str, rel: str, lone: bool, rules: Rules):
        return walk(arg, source, rel, files=self._files, lone=lone, rules=rules)

    def _notify_job_size(self, files: int, dirs: int, nbytes: int) -> None:
        self.tally.emit("NOTIFICATION", {"PreTransferFiles": files, "PreTransferDirs": dirs,
                                         "PreTransferBytes": nbytes})

    async def _upload(self, arg: int, items) -> None:
        await self._sender.send_all(items, self._report_problem)
        self.tally.arg_done(arg)

    def _report_problem(self, problem: Problem) -> None:
        if problem.skip:
            self.tally.skipped(problem.path, problem.arg, 0, problem.desc)
        else:
            self.tally.failed(problem.path, problem.arg, problem.code, problem.desc)

    async def _download_args(self) -> None:
        cfg = self.cfg
        self._next_arg = len(cfg.sources)
        if cfg.precalculate:
            self._held = []
        for arg, source in enumerate(cfg.sources):
            pair = cfg.pair_dests[arg] if cfg.pair_dests is not None else None
            await self._channel.send("get", arg=arg, source=source, start=None, end=None,
                                     rel=pair, lone=cfg.lone)
        for arg in range(len(cfg.sources)):
            await self._args_done[arg].wait()
            await self._receiver.idle()
            self.tally.arg_done(arg)

    def _release_when_listed(self) -> None:
        """--precalculate-job-size on a download: the job's totals must reach the manager before any file
        starts, but the peer offers a source's files right after listing it. So file offers wait in
        ``_held`` until every command-line source is listed; then NOTIFICATION goes out and they are
        delivered in the order they came."""
        count = len(self.cfg.sources)
        if self._held is None or any(arg not in self._listings for arg in range(count)):
            return
        listed = [self._listings[arg] for arg in range(count)]
        self._notify_job_size(files=sum(m["files"] for m in listed), dirs=sum(m["dirs"] for m in listed),
                              nbytes=sum(m["bytes"] for m in listed))
        held, self._held = self._held, None
        for msg in held:
            if not self._receiver.deliver(msg):
                self.fail(ProtocolError(f"unexpected file message for file {msg.get('fid')}"))

    async def _start_item(self, source: str, dest: str, start: int | None, end: int | None) -> None:
        """One persistent-session START: upload or download one source to ``dest`` (relative to DEST)."""
        arg = self._next_arg
        self._next_arg += 1
        if self.cfg.direction == "send":
            rules = Rules.from_opts(self.cfg.local_options())
            items = list(self._walk_local(arg, source, dest, False, rules))
            for item in items:
                if isinstance(item, FileJob):
                    item.start, item.end = start, end
            await self._upload(arg, items)
        else:
            await self._channel.send("get", arg=arg, source=source, start=start, end=end, rel=dest, lone=False)
            await self._args_done[arg].wait()
            await self._receiver.idle()
            self.tally.arg_done(arg)

    # ---- management commands ------------------------------------------------------------------------

    async def command(self, frame: mgmt.Frame) -> None:
        """Obey one management command (called in order by the management reader)."""
        kind = frame.type.upper()
        try:
            if kind == "CANCEL":
                self.fail(EngineError(ErrorCode.USER_CANCEL, "cancelled by the manager"))
            elif kind == "RATE":
                await self._set_rate(frame)
            elif kind == "START":
                source, dest = frame.get("Source"), frame.get("Destination")
                if not source:
                    raise EngineError(ErrorCode.USAGE, "START without Source")
                start, end = frame.int("StartByte"), frame.int("EndByte")
                self._items.put_nowait(self._after_connect(
                    self._start_item(source, dest or os.path.basename(source.rstrip("/")), start, end)))
            elif kind == "DONE":
                self._items.put_nowait(None)
            elif kind in ("PUT", "WRITE", "CLOSE"):
                await self._stream_command(kind, frame)
        except (EngineError, mgmt.MgmtProtocolError) as exc:
            self.fail(exc if isinstance(exc, EngineError) else EngineError(ErrorCode.USAGE, str(exc)))

    async def _after_connect(self, coro) -> None:
        await self._connected.wait()
        await coro

    async def _set_rate(self, frame: mgmt.Frame) -> None:
        """RATE: kbit/s; in an --auto-detect-capacity session Rate is a percent like -l (above 100 means
        100, so a manager that thinks in kbit/s gets all of the capacity), MinRate stays kbit/s."""
        percent = self._rate.percent
        target = frame.int("Rate", percent or self._rate.target_kbps)
        minimum = frame.int("MinRate", self._rate.min_kbps)
        policy = (frame.get("Policy") or self._rate.policy).lower()
        if policy not in POLICIES or target <= 0 or minimum < 0:
            raise EngineError(ErrorCode.USAGE, f"invalid RATE command: {frame.fields}")
        if percent:
            self._rate = RateSettings(self._rate.target_kbps, minimum, policy, percent=min(target, 100))
        else:
            self._rate = RateSettings(target, min(minimum, target), policy)
        if self._transport is not None:
            self._transport.set_rate(self._rate)
            self._rate_seq += 1
            await self._channel.send("rate", seq=self._rate_seq, **self._rate_dict())

    async def _stream_command(self, kind: str, frame: mgmt.Frame) -> None:
        await self._connected.wait()
        if self.cfg.direction != "send":
            raise EngineError(ErrorCode.USAGE, "stream commands need an upload session")
        if kind == "PUT":
            if self._stream is not None:
                raise EngineError(ErrorCode.USAGE, "PUT while another stream is open")
            dest = frame.get("Destination")
            if not dest:
                raise EngineError(ErrorCode.USAGE, "PUT without Destination")
            arg = self._next_arg
            self._next_arg += 1
            self._stream = OutStream(self._sender, self.tally, arg, dest)
            await self._stream.open()
        elif self._stream is None:
            raise EngineError(ErrorCode.USAGE, f"{kind} without an open stream (PUT first)")
        elif kind == "WRITE":
            await self._stream.write(frame.payload)
        else:
            stream, self._stream = self._stream, None
            await stream.close()

    # ---- statistics ---------------------------------------------------------------------------------

    def _rate_dict(self) -> dict:
        return self._rate.to_wire()

    def _target_kbps(self, stats: dict) -> int:
        """STATS TargetRate: -l, or with --auto-detect-capacity its percent of the capacity once measured
        (the ceiling until then)."""
        rate = self._rate
        capacity = stats.get("capacity_kbps") or self._capacity_kbps
        if not rate.percent or capacity is None:
            return rate.target_kbps
        return min(rate.target_kbps, max(capacity * rate.percent // 100, rate.min_kbps))

    async def _stats_loop(self) -> None:
        counter = "bytes_sent" if self.cfg.direction == "send" else "bytes_received"
        last_bytes, last_time = 0, time.monotonic()
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            stats = self._transport.stats()
            now = time.monotonic()
            moved = stats.get(counter, 0)
            rate = (moved - last_bytes) * 8 / 1000 / max(now - last_time, 1e-3)
            last_bytes, last_time = moved, now
            self.tally.stats(rate_kbps=int(rate), target_kbps=self._target_kbps(stats),
                             min_kbps=self._rate.min_kbps, policy=self._rate.policy.upper(),
                             loss=stats.get("loss") or stats.get("loss_in") or 0.0, rtt_ms=stats.get("rtt_ms"))


def _rate_from(raw: dict) -> dict:
    try:
        return {"target_kbps": int(raw["target"]), "min_kbps": int(raw["min"]), "policy": str(raw["policy"]),
                "percent": int(raw.get("percent", 0))}
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"malformed rate {raw!r}") from None


def _as_engine_error(exc: BaseException) -> EngineError:
    if isinstance(exc, EngineError):
        return exc
    return EngineError(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

