"""The client side of a session: SSH to the peer, start its server mode, open the data channel, move files.

One :class:`ClientSession` per process. Its life: INIT, SSH connect and the peer engine started
(:mod:`~fasp.session.peer`, host keys by :mod:`~fasp.session.hostkeys`), hello/welcome and the data
channel (:mod:`~fasp.session.handshake`), SESSION, then the work (:mod:`~fasp.session.feeding`: upload,
download, persistent START items or a stream), then bye and DONE, or ERROR with a code. Every failure,
including CANCEL and a vanished manager, funnels through one future so the session ends the same way
whatever happened, and the peer process ends with our channel. What exists only once connected is a
:class:`Live`, built complete; this module keeps the session's life, the control messages' dispatch and
the management commands (the rate they change is :mod:`~fasp.session.clientrate`'s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import asyncssh

from fasp.datapath import pmtu
from fasp.datapath.datachannel import DataChannel
from fasp.errors import ProtocolError
from fasp.files import docroot
from fasp.files.jobs import Problem
from fasp.options.flags import Config, Endpoint
from fasp.session.channel import Channel
from fasp.session.clientrate import ClientRate
from fasp.session.feeding import Downloads, StartItem, Uploads, feeder
from fasp.session.handshake import Link, handshake
from fasp.session.manifest import write_manifest
from fasp.session.messages import (
    ArgDone,
    Bye,
    Cancel,
    Capacity,
    FileError,
    Listed,
    Message,
    Offer,
    Piece,
    Rate,
    RateChange,
    SessionFailed,
)
from fasp.session.peer import PeerEngine
from fasp.session.setupclock import SetupClock
from fasp.session.tally import Tally
from faspmanager import mgmt
from faspmanager.codes import EngineError, ErrorCode

log = logging.getLogger("fasp.session.client")
BYE_TIMEOUT = 5.0
STATS_INTERVAL = 0.5

Emit = Callable[[str, dict], None]
Exit = Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], Awaitable[bool]]
"""An AsyncExitStack exit callback: (exception type, exception, traceback) -> whether it is suppressed."""
T = TypeVar("T")


@dataclass(frozen=True)
class Live:
    """A connected session: the peer engine, the data channel, and the work going over them."""

    peer: PeerEngine
    link: Link
    work: Uploads | Downloads

    @property
    def channel(self) -> Channel:
        return self.peer.channel

    @property
    def transport(self) -> DataChannel:
        return self.link.transport


class ClientSession:
    def __init__(self, cfg: Config, emit: Emit) -> None:
        if cfg.remote is None:
            raise EngineError(ErrorCode.USAGE, "a client session needs a remote host")
        self.cfg = cfg
        self._remote: Endpoint = cfg.remote
        self.session_id = uuid.uuid4().hex
        self.tally = Tally(emit, self.session_id, cfg.file_checksum)
        # every local file operation, the manifest's included: as given, or confined to a local docroot
        # (--apply-local-docroot) or to the directories FASP_SEND_ROOTS / FASP_RECV_ROOTS allow
        self.files = docroot.handle(cfg.local_docroot, roots=cfg.local_roots)
        self._rate = ClientRate(cfg)
        loop = asyncio.get_running_loop()
        self._failure: asyncio.Future[None] = loop.create_future()
        self._live: asyncio.Future[Live] = loop.create_future()  # management commands wait for it
        self._items: asyncio.Queue[StartItem | None] = asyncio.Queue()  # START items; None for DONE
        self._bye = asyncio.Event()
        self._clock = SetupClock()  # from here to the first piece request: setup

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """The whole session, ending with DONE (returns) or ERROR (raises EngineError, after cleanup).
        Whatever exists is freed in reverse order of its making; the control reader outlives the rest:
        it must hear the peer's "bye"."""
        cfg = self.cfg
        self.tally.emit(
            "INIT",
            {
                "Direction": "Send" if cfg.direction == "send" else "Receive",
                "Host": self._remote.host,
                "User": self._remote.user,
                "Port": self._remote.port,
                "UdpPort": cfg.udp_port,
                "Rate": cfg.target_kbps,
                "MinRate": cfg.min_kbps,
                "Policy": cfg.policy.upper(),
                "Encryption": cfg.key_bytes > 0,
                "Cipher": cfg.cipher,
                "Keepalive": cfg.keepalive,
                "Cookie": cfg.cookie,
                "RetryTimeout": cfg.retry_timeout,
                "DatagramSize": cfg.datagram_size,
            },
        )
        readers: list[asyncio.Task[None]] = []
        try:
            async with contextlib.AsyncExitStack() as cleanup:
                listed = False
                try:
                    live = await self._race(self._connect(cleanup))
                    readers.append(asyncio.create_task(self._control_reader(live)))
                    cleanup.callback(asyncio.create_task(self._stats_loop(live.transport)).cancel)
                    await self._race(live.work.run(self._items))
                    if cfg.manifest_dir:  # before the outcome: a session that ends 27 lists its failed files too
                        listed = True
                        self._write_manifest(cfg.manifest_dir)
                    outcome = self.tally.session_outcome()
                    if outcome is not None:
                        raise EngineError(*outcome)
                except Exception as exc:
                    error = _as_engine_error(exc)
                    if not isinstance(exc, EngineError):
                        log.exception("internal error")
                    # the manager hears at once; cleaning up may take a moment more
                    self.tally.emit(
                        "ERROR", {"Code": error.code, "Description": error.description, **self.tally.done_fields()}
                    )
                    if cfg.manifest_dir and not listed and self._live.done():  # cancelled, peer gone...
                        self.tally.interrupted(error.code, error.description)
                        with contextlib.suppress(EngineError):
                            self._write_manifest(cfg.manifest_dir)
                    raise error from None
        finally:
            for reader in readers:
                reader.cancel()
        self.tally.emit("DONE", self.tally.done_fields())

    def _write_manifest(self, directory: str) -> None:
        write_manifest(self.files, directory, self.session_id, self.tally.outcomes, self.cfg.manifest_inprogress_suffix)

    async def _connect(self, cleanup: contextlib.AsyncExitStack) -> Live:
        """Peer engine, handshake, work; each part registered in ``cleanup`` the moment it exists."""
        cfg = self.cfg
        clock = self._clock
        peer = await PeerEngine.start(self._remote, clock)
        cleanup.push_async_callback(peer.close)
        data_channel = contextlib.AsyncExitStack()  # closes after the farewell, before the peer
        cleanup.push_async_callback(data_channel.aclose)
        cleanup.push_async_exit(self._farewell(peer.channel))
        link = await handshake(cfg, self._remote, peer, self.session_id, self._rate.settings, clock)
        data_channel.push_async_callback(link.transport.close)
        if link.opening is not None:  # the UDP handshake goes on while the work starts
            opening = link.opening
            cleanup.callback(opening.cancel)
            opening.add_done_callback(self._opened)
        self._rate.settings = link.rate
        work = feeder(
            cfg, self.files, self.tally, peer.channel, link.transport, lambda exc: self.fail(_as_engine_error(exc))
        )
        cleanup.push_async_exit(_on_failure(work.abort))
        live = Live(peer, link, work)
        self._live.set_result(live)
        size = link.transport.datagram_size
        self.tally.emit(
            "SESSION",
            {
                "Transport": link.carrier,
                "Host": self._remote.host,
                "RemoteAddress": self._remote.host,
                "Port": link.port,
                "DatagramSize": size,
                "PMTU": size + pmtu.IP_UDP_HEADERS if size else 0,
                "Rate": link.rate.target_kbps,
                "MinRate": link.rate.min_kbps,
                "Policy": link.rate.policy.upper(),
                "Encryption": cfg.key_bytes > 0,
            },
        )
        return live

    def _opened(self, opening: asyncio.Future[None]) -> None:
        """A data channel that opened while the work started: its failure is the session's."""
        error = None if opening.cancelled() else opening.exception()
        if error is not None:
            self.fail(_as_engine_error(error))

    def fail(self, error: EngineError) -> None:
        """End the session with ``error`` (CANCEL, manager gone, peer gone...); the first failure wins."""
        if not self._failure.done():
            self._failure.set_exception(error)
            self._failure.exception()  # retrieved: a failure after the session ended needs no traceback

    async def _race(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` unless the session fails first."""
        task = asyncio.ensure_future(coro)
        racing: set[asyncio.Future[Any]] = {task, self._failure}
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        if self._failure.done():
            task.cancel()
            try:
                await task
            except BaseException:
                pass
            self._failure.result()
        return task.result()

    def _farewell(self, channel: Channel) -> Exit:
        """The peer hears bye (after a session that went well) or cancel, then the channel closes."""

        async def farewell(exc_type: type[BaseException] | None, *_: Any) -> bool:
            try:
                if exc_type is None:
                    await asyncio.wait_for(self._say_bye(channel), BYE_TIMEOUT)
                else:
                    await asyncio.wait_for(channel.send(Cancel()), 1.0)
            except (TimeoutError, Exception):
                pass
            channel.close()
            return False

        return farewell

    async def _say_bye(self, channel: Channel) -> None:
        await channel.send(Bye())
        await self._bye.wait()

    # ---- control channel ----------------------------------------------------------------------------

    async def _control_reader(self, live: Live) -> None:
        try:
            while True:
                msg = await live.channel.recv()
                if msg is None:
                    if not self._bye.is_set():
                        self.fail(
                            EngineError(
                                ErrorCode.CONNECTION_LOST,  # the peer engine or its SSH is gone
                                f"control connection lost: {live.peer.last_words() or 'peer closed'}",
                            )
                        )
                    return
                self._on_message(live, msg)
        except EngineError as exc:
            self.fail(exc)
        except (asyncssh.Error, OSError) as exc:
            self.fail(EngineError(ErrorCode.CONNECTION_LOST, f"control connection lost: {exc}"))

    def _on_message(self, live: Live, msg: Message) -> None:
        if isinstance(msg, Piece):  # an upload's first data byte leaves with the first one
            self._clock.mark("piece")
        match msg:
            case Bye():
                self._bye.set()
            case SessionFailed(code=code, desc=desc):
                self.fail(EngineError(code, desc))
            case Cancel():
                self.fail(EngineError(ErrorCode.PEER_ABORTED_SESSION, "the peer cancelled the session"))
            case Listed():
                live.work.listed(msg)
            case Offer() if live.work.hold(msg):
                pass  # delivered once the job size is out
            case ArgDone(arg=arg):
                live.work.arg_offered(arg)
            case FileError(fid=None, arg=arg, path=path, code=code, desc=desc, skip=skip, rel=rel):
                live.work.report_problem(Problem(arg, path, code, desc, skip=skip, rel=rel))  # a source never offered
            case Capacity(kbps=kbps):  # the peer's sender measured the path (--auto-detect-capacity)
                self._rate.capacity_kbps = kbps
            case RateChange(seq=seq, rate=rate):
                if seq == self._rate.seq:  # the peer's caps applied to our latest change
                    self._rate.settings = rate.settings()
                    live.transport.set_rate(self._rate.settings)
            case _ if not live.work.deliver(msg):
                self.fail(ProtocolError(f"unexpected {msg.TYPE} message (file {getattr(msg, 'fid', None)})"))

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
                self._items.put_nowait(
                    StartItem(
                        source,
                        dest or os.path.basename(source.rstrip("/")),
                        frame.int("StartByte"),
                        frame.int("EndByte"),
                    )
                )
            elif kind == "DONE":
                self._items.put_nowait(None)
            elif kind in ("PUT", "WRITE", "CLOSE"):
                await self._stream_command(kind, frame)
        except (EngineError, mgmt.MgmtProtocolError) as exc:
            self.fail(exc if isinstance(exc, EngineError) else EngineError(ErrorCode.USAGE, str(exc)))

    async def _set_rate(self, frame: mgmt.Frame) -> None:
        """RATE: our new proposal, and once connected the transport's pace and the peer's view of it. An invalid
        one is logged and ignored: the protocol has no answer to a command, and a manager's mistake (or another
        manager's idea of a pause) must not end the transfer."""
        try:
            rate = self._rate.command(frame)
        except ValueError as exc:  # MgmtProtocolError too: a Rate that is no integer
            log.warning("ignoring a RATE command (%s): the rate stays as it was", exc)
            return
        if self._live.done():
            live = self._live.result()
            live.transport.set_rate(rate)
            self._rate.seq += 1
            await live.channel.send(RateChange(seq=self._rate.seq, rate=Rate.of(rate)))

    async def _stream_command(self, kind: str, frame: mgmt.Frame) -> None:
        work = (await self._live).work
        if not isinstance(work, Uploads):
            raise EngineError(ErrorCode.USAGE, "stream commands need an upload session")
        if kind == "PUT":
            await work.open_stream(frame.get("Destination"))
        elif kind == "WRITE":
            await work.write_stream(frame.payload)
        else:
            await work.close_stream()

    # ---- statistics ---------------------------------------------------------------------------------

    async def _stats_loop(self, transport: DataChannel) -> None:
        counter = "bytes_sent" if self.cfg.direction == "send" else "bytes_received"
        last_bytes, last_time = 0, time.monotonic()
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            stats = transport.stats()
            now = time.monotonic()
            moved = stats.get(counter, 0)
            rate = (moved - last_bytes) * 8 / 1000 / max(now - last_time, 1e-3)
            last_bytes, last_time = moved, now
            self.tally.stats(
                rate_kbps=int(rate),
                target_kbps=self._rate.target_kbps(stats),
                min_kbps=self._rate.settings.min_kbps,
                policy=self._rate.settings.policy.upper(),
                loss=stats.get("loss") or stats.get("loss_in") or 0.0,
                rtt_ms=stats.get("rtt_ms"),
            )


def _on_failure(abort: Callable[[], Awaitable[None]]) -> Exit:
    """An exit callback that runs ``abort`` only when the session failed."""

    async def exit_(exc_type: type[BaseException] | None, *_: Any) -> bool:
        if exc_type is not None:
            await abort()
        return False

    return exit_


def _as_engine_error(exc: BaseException) -> EngineError:
    if isinstance(exc, EngineError):
        return exc
    return EngineError(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
