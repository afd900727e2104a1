"""Server mode (``--server``): the remote end of a session, on the SSH channel's stdin/stdout.

Started per session by fasp-server (with the user's docroot and caps) or by
the client over a stock sshd (docroot from FASP_DOCROOT, else the whole
filesystem as the SSH user sees it). Every file operation on a path the client
names goes through the session's one :class:`fasp.files.docroot.Docroot` handle. The
session ends when the client says bye, or cancels, or its channel closes (stdin
EOF), or SIGTERM: in every case the UDP socket is freed and the process exits,
so no server half outlives its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass, replace

from fasp.datapath.datachannel import DataChannel
from fasp.datapath.httpchannel import SOCKET_ENV, FallbackTransport, Registration
from fasp.datapath.seal import SHARE_BYTES, SessionKey
from fasp.datapath.udpchannel import RateSettings, Transport
from fasp.errors import ProtocolError
from fasp.files import docroot
from fasp.files.jobs import FileJob, Problem, Rules, top_name, walk
from fasp.files.logdir import log_file, session_log_name
from fasp.options.flags import Config
from fasp.options.peer import PeerOptions
from fasp.session.channel import Channel, stdio_channel
from fasp.session.messages import (
    VERSION,
    ArgDone,
    Bye,
    Cancel,
    Capacity,
    Fallback,
    FallbackReady,
    FileError,
    Get,
    Hello,
    Listed,
    Offer,
    Rate,
    RateChange,
    SessionFailed,
    Welcome,
)
from fasp.session.receiving import ReceivingRole
from fasp.session.sending import SendingRole
from fasp.session.tally import Tally
from fasp.session.usage import UsageReport
from faspmanager.codes import EngineError, ErrorCode

log = logging.getLogger("fasp.session.server")
HELLO_TIMEOUT = 30.0
REACH_TIMEOUT = 20.0
"""How long an upload's first offer waits for the client's UDP hello (the client gives up after 10 s)."""
MAX_TAGS_LOGGED = 4096  # a client's tags in the server log: bounded


def bind_address() -> str:
    """Where to listen for UDP: FASP_UDP_BIND, else the address the SSH client reached, else any."""
    explicit = os.environ.get("FASP_UDP_BIND")
    if explicit:
        return explicit
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    return ssh[2] if len(ssh) == 4 else "0.0.0.0"


@dataclass(frozen=True)
class Live:
    """A session once the hello arrived: what the client asked for, the key, and the data channel with the
    role over it (a fallback, before any file moved, makes a new Live with both replaced)."""

    hello: Hello
    key: SessionKey
    transport: DataChannel
    role: SendingRole | ReceivingRole


class ServerSession:
    def __init__(self, cfg: Config, channel: Channel) -> None:
        self.cfg = cfg
        self.channel = channel
        self.files = docroot.handle(cfg.docroot, home=True)  # every file operation goes through it
        self.failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tasks: set[asyncio.Task[None]] = set()
        self._data_channels = contextlib.AsyncExitStack()  # every data channel opened, closed by close()
        self.usage = UsageReport.from_environment()  # fasp-server's metrics: the bytes this session moves
        self.tally: Tally | None = None

    async def close(self) -> None:
        """Free the data channels this session opened (none before the hello); the last usage report."""
        await self._data_channels.aclose()
        if self.usage is not None:
            self.usage.close()

    def capped(self, rate: Rate) -> RateSettings:
        """The client's rate within this user's caps (a capacity percent passes; the cap bounds its ceiling)."""
        target, minimum, policy, percent = rate.target, rate.min, rate.policy, rate.percent
        if policy not in self.cfg.allowed_policies:
            raise EngineError(
                ErrorCode.UNAUTHORIZED,
                f"policy {policy!r} is not allowed for this user (allowed: {', '.join(self.cfg.allowed_policies)})",
            )
        if self.cfg.rate_cap_kbps is not None:
            target = min(target, self.cfg.rate_cap_kbps)
        return RateSettings(max(target, 1), min(max(minimum, 0), max(target, 1)), policy, percent, rate.start_at_target)

    async def run(self) -> None:
        hello = await asyncio.wait_for(self.channel.recv(), HELLO_TIMEOUT)
        if hello is None:
            return
        if not isinstance(hello, Hello):  # its version was checked as it was decoded
            raise ProtocolError(f"expected hello, got {hello.TYPE}")
        if hello.opts.log_dir:  # first: the -R log has the session's every line
            self._log_to(hello.session)
        if hello.token:
            log.info("the client presented an ASPERA_SCP_TOKEN; SSH authentication already authorized it here")
        rate = self.capped(hello.rate)
        share = os.urandom(SHARE_BYTES)  # ours: with the client's, neither end alone chooses the key
        key = SessionKey.derive(hello.share, share, bytes.fromhex(hello.session), hello.key_bytes)
        udp = await self._listen(hello, key, rate)
        self._data_channels.push_async_callback(udp.close)
        udp.on_capacity = self._tell_capacity
        tally = self.tally = Tally(lambda event, fields: None, hello.session)
        if self.usage is not None:
            self.usage.follow("in" if hello.direction == "send" else "out", lambda: tally.transfer_bytes)
        live = Live(hello, key, udp, self._role(hello, udp))
        await self.channel.send(Welcome(v=VERSION, share=share, udp_port=udp.local_port, rate=Rate.of(rate)))
        welcomed = asyncio.get_running_loop().time()
        log.info(
            "session %s: client %s, destination %r, UDP port %d, rate %s",
            hello.session,
            "uploads" if hello.direction == "send" else "downloads",
            hello.dest,
            udp.local_port,
            rate,
        )
        if hello.opts.tags is not None:  # the client's --tags, as IBM's server logs them
            log.info("session %s: tags %s", hello.session, json.dumps(hello.opts.tags)[:MAX_TAGS_LOGGED])
        reader = asyncio.create_task(self._read(live, welcomed))
        await asyncio.wait({reader, self.failure}, return_when=asyncio.FIRST_COMPLETED)
        if self.failure.done():
            reader.cancel()
            self.failure.result()
        reader.result()

    def _role(self, hello: Hello, transport: DataChannel) -> SendingRole | ReceivingRole:
        """The role over ``transport`` (again after a fallback, before any file moved)."""
        tally = self.tally
        assert tally is not None, "made with the welcome, before any role"
        if hello.direction == "send":
            receiver = ReceivingRole(self.channel, transport, tally, hello.opts, dest=hello.dest, files=self.files)
            receiver.on_fatal = self._fatal
            return receiver
        return SendingRole(self.channel, transport, tally, hello.opts, files=self.files)

    async def _fallback(self, live: Live, msg: Fallback) -> Live:
        """The client's UDP could not reach us (-y 1): register its session with fasp-server's fallback
        port, give the client the one-time token, and carry on over the stream fasp-server relays."""
        path = os.environ.get(SOCKET_ENV)
        if not path:
            raise EngineError(
                ErrorCode.CONNECTION_ERROR_HTTP,
                "this server offers no HTTP fallback (only fasp-server with --http-port does)",
            )
        session, token = live.hello.session, os.urandom(24).hex()
        registration = await Registration.open(path, session, token)
        await self.channel.send(FallbackReady(token=token))
        reader, writer, name = await registration.wait()
        udp = live.transport
        http = FallbackTransport(
            reader,
            writer,
            session_id=bytes.fromhex(session),
            key=live.key,
            direction=1,
            jpeg=msg.jpeg,
            rate=udp.rate_settings,
            name=name,
        )
        self._data_channels.push_async_callback(http.close)
        await udp.close()
        log.info("session %s: data now over %s%s", session, name, " (JPEG frames)" if msg.jpeg else "")
        return replace(live, transport=http, role=self._role(live.hello, http))

    async def _listen(self, hello: Hello, key: SessionKey, rate: RateSettings) -> Transport:
        """The UDP endpoint: the server's own -O strictly; a client's -O only as a wish, since every
        session would otherwise fight over one port (the welcome tells the client where we are)."""
        listen = lambda port: Transport.listen(  # noqa: E731
            bind_address(),
            port,
            session_id=bytes.fromhex(hello.session),
            key=key,
            datagram_size=hello.datagram_size,
            rate=rate,
        )
        if self.cfg.udp_port:
            return await listen(self.cfg.udp_port)
        try:
            return await listen(hello.udp_port)
        except EngineError as exc:
            if not hello.udp_port:
                raise
            log.info("UDP port %d unavailable (%s): using any free port", hello.udp_port, exc.description)
            return await listen(0)

    def _log_to(self, session: str) -> None:
        """-R: this session's log also goes to a file the server names in the operator's --log-dir; the
        client's DIR is never used (it chose a place the server writes to: issue 10, attack 3)."""
        if not self.cfg.server_log_dir:
            log.info("-R ignored: this server keeps no session logs for clients (no --log-dir)")
            return
        name = session_log_name()
        handler = log_file(
            self.cfg.server_log_dir,
            name,
            "%(asctime)s %(name)s %(message)s",
            what="the server's --log-dir",
            code=ErrorCode.NO_PERMS,
        )
        logging.getLogger("fasp").addHandler(handler)
        log.info("session %s: -R log in the server's log directory as %s", session, name)

    def _tell_capacity(self, kbps: int) -> None:
        """--auto-detect-capacity in a download: our sender measured the path; the client reports it (a rate
        message without seq, which changes nothing, carries it)."""
        log.info("measured path capacity: %d kbit/s", kbps)
        task = asyncio.create_task(self.channel.send(Capacity(kbps=kbps)))
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _fatal(self, exc: BaseException) -> None:
        if not self.failure.done():
            self.failure.set_exception(exc)

    async def _read(self, live: Live, welcomed: float | None) -> None:
        """``welcomed``: when the welcome went (loop time). The client waits for it before anything else, so the
        first message's arrival measures a round trip (an upper bound: the client's own work is in it), which the
        data channel's window assumes until it has measured its own."""
        may_fall_back = True  # until the data channel carried anything
        reached = False  # the client's UDP hello came: offers go to the role without a wait (a loop round each)
        while True:
            msg = await self.channel.recv()
            if msg is None:
                raise EngineError(ErrorCode.TRANSFER_ERROR, "the client closed the control channel")
            if welcomed is not None:
                live.transport.control_rtt(asyncio.get_running_loop().time() - welcomed)
                welcomed = None
            if isinstance(msg, Fallback):
                if not may_fall_back:
                    raise ProtocolError("fallback requested after the data channel was in use")
                may_fall_back = False
                live = await self._fallback(live, msg)
                continue
            may_fall_back = False
            match msg:
                case Bye():
                    if self.tasks:
                        await asyncio.wait(set(self.tasks))
                    if isinstance(live.role, ReceivingRole):
                        await live.role.idle()
                    await self.channel.send(Bye())
                    log.info("session ended by the client")
                    return
                case Cancel():
                    raise EngineError(ErrorCode.USER_CANCEL, "cancelled by the client")
                case RateChange(seq=seq, rate=wanted):
                    rate = self.capped(wanted)
                    live.transport.set_rate(rate)
                    await self.channel.send(RateChange(seq=seq, rate=Rate.of(rate)))
                case Get():
                    if not isinstance(live.role, SendingRole):
                        raise ProtocolError("get in an upload session")
                    task = asyncio.create_task(self._serve_get(msg, live.role, live.hello.opts))
                    self.tasks.add(task)
                    task.add_done_callback(self._task_done)
                case Offer() if isinstance(live.transport, Transport) and isinstance(live.role, ReceivingRole):
                    if not reached:
                        await self._reached(live.transport)
                        reached = True
                    if not live.role.deliver(msg):
                        raise ProtocolError(f"unexpected {msg.TYPE} message (file {msg.fid})")
                case _ if not live.role.deliver(msg):
                    raise ProtocolError(f"unexpected {msg.TYPE} message (file {getattr(msg, 'fid', None)})")

    async def _reached(self, udp: Transport) -> None:
        """An upload's client may offer its first file while its UDP hello is still on the way: no file of
        ours is touched for it until that hello arrived (a data channel that never opens leaves nothing)."""
        try:
            await asyncio.wait_for(udp.reached(), REACH_TIMEOUT)
        except TimeoutError:
            raise EngineError(ErrorCode.CONNECTION_TIMEOUT, "the client's data channel never reached us") from None

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self._fatal(exc)

    async def _serve_get(self, msg: Get, sender: SendingRole, opts: PeerOptions) -> None:
        """One download source argument (or keepalive START): walk it, offer its files, then argdone."""
        arg, source = msg.arg, msg.source
        walked = False
        rel = msg.rel  # the argument's name below the client's destination (None: not even that could be told)
        try:
            rel = rel or top_name(source, opts.src_base, None, self.files)
            items = await asyncio.to_thread(
                list, walk(arg, source, rel, files=self.files, lone=msg.lone, rules=Rules.from_opts(opts))
            )
            walked = True
        except EngineError as exc:
            items = [Problem(arg, source, exc.code, exc.description)]
        files = [i for i in items if isinstance(i, FileJob) and not i.is_dir]
        for job in files:
            job.start, job.end = msg.start, msg.end
        await self.channel.send(
            Listed(
                arg=arg,
                files=len(files),
                nbytes=sum(j.size for j in files),
                dirs=sum(1 for i in items if isinstance(i, FileJob) and i.is_dir),
            )
        )
        problems: list[Problem] = []
        await sender.send_all(items, problems.append)
        if walked:
            sender.finish_arg(source)
        for problem in problems:
            await self.channel.send(
                FileError(
                    fid=None,
                    arg=arg,
                    path=problem.path,
                    code=int(problem.code),
                    desc=problem.desc,
                    skip=problem.skip,
                    rel=problem.rel or rel,
                )
            )
        await self.channel.send(ArgDone(arg=arg))


async def serve(cfg: Config) -> int:
    """Run one server-mode session on stdin/stdout; the process exit status."""
    channel = await stdio_channel()
    os.dup2(2, 1)  # from here on a stray print goes to stderr, never into the control channel
    session = ServerSession(cfg, channel)
    main = asyncio.current_task()
    assert main is not None, "a coroutine awaited by asyncio.run runs in its main task"
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    status = 0
    try:
        await session.run()
    except asyncio.CancelledError:
        log.info("session ended by signal")
        status = 1
    except TimeoutError:
        log.error("no hello from the client")
        status = 1
    except EngineError as exc:
        log.error("session failed: %s", exc)
        status = 1
        if exc.code not in (ErrorCode.TRANSFER_ERROR, ErrorCode.USER_CANCEL):
            try:
                await asyncio.wait_for(channel.send(SessionFailed(code=exc.code, desc=exc.description)), 2.0)
            except (TimeoutError, Exception):
                pass
    finally:
        for task in list(session.tasks):
            task.cancel()
        await session.close()
        channel.close()
    return status
