"""What a connected client session moves: the command line's sources, then persistent START items.

Each source, START item and stream is one *arg* (numbered in that order) whose end the tally reports.
:class:`Uploads` walks local sources into the sending role (and carries management streams);
:class:`Downloads` asks the peer for each source and waits until the peer says it was all offered and
the receiving role is idle. Both are built by :func:`feeder` once the data channel is open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fasp.datapath.datachannel import DataChannel
from fasp.files import docroot, settle
from fasp.files.jobs import FileJob, Problem, Rules, top_name, walk
from fasp.options.flags import Config
from fasp.session.channel import Channel
from fasp.session.messages import Get, Listed, Message, Offer
from fasp.session.sending import SendingRole
from fasp.session.tally import Tally
from faspmanager.codes import EngineError, ErrorCode

if TYPE_CHECKING:
    from fasp.session.receiving import ReceivingRole
    from fasp.session.stream import OutStream


@dataclass(frozen=True)
class StartItem:
    """One persistent-session START: ``source`` to ``dest`` (relative to DEST), optionally a byte range."""

    source: str
    dest: str
    start: int | None
    end: int | None


class Feeder:
    """The work of one session, whichever way it goes."""

    def __init__(self, cfg: Config, tally: Tally) -> None:
        self._cfg = cfg
        self._tally = tally
        self._next_arg = len(cfg.sources)

    async def run(self, items: asyncio.Queue[StartItem | None]) -> None:
        """The command line's sources; then, in a persistent session, START items until DONE (None)."""
        cfg = self._cfg
        if cfg.sources:
            await self.command_line()
        if cfg.keepalive or (not cfg.sources and cfg.mgmt_port is not None):
            while (item := await items.get()) is not None:
                await self.start_item(item)
        await self.idle()

    def new_arg(self) -> int:
        arg = self._next_arg
        self._next_arg += 1
        return arg

    def notify_job_size(self, files: int, dirs: int, nbytes: int) -> None:
        self._tally.emit(
            "NOTIFICATION", {"PreTransferFiles": files, "PreTransferDirs": dirs, "PreTransferBytes": nbytes}
        )

    def report_problem(self, problem: Problem) -> None:
        """A source that was never offered: SKIP or FILEERROR, naming it as the session's other files are."""
        name = self.name_of(problem)
        source = None if name == problem.path else problem.path
        if problem.skip:
            self._tally.skipped(name, problem.arg, 0, problem.desc, source)
        else:
            self._tally.failed(name, problem.arg, problem.code, problem.desc, source)

    def name_of(self, problem: Problem) -> str:
        """How events name a file: by its local path (an upload's source here)."""
        return problem.path

    async def command_line(self) -> None:
        raise NotImplementedError

    async def start_item(self, item: StartItem) -> None:
        raise NotImplementedError

    def deliver(self, msg: Message) -> bool:
        """Hand a per-file message to the role; False if it has no business with it."""
        raise NotImplementedError

    async def idle(self) -> None:
        """Until every file the peer offered has landed (nothing to wait for on an upload)."""

    def listed(self, msg: Listed) -> None:
        """The peer's totals for a download source (an upload has none)."""

    def hold(self, msg: Offer) -> bool:
        """Whether a file offer waits for the job size (only a --precalculate-job-size download holds)."""
        return False

    def arg_offered(self, arg: int) -> None:
        """The peer offered all of a download source (``argdone``)."""

    async def abort(self) -> None:
        """The session failed: drop what is half sent."""


class Uploads(Feeder):
    def __init__(self, cfg: Config, tally: Tally, sender: SendingRole, files: docroot.Files) -> None:
        super().__init__(cfg, tally)
        self._sender = sender
        self._files = files
        self._stream: OutStream | None = None  # the management stream open now (PUT ... CLOSE)

    async def command_line(self) -> None:
        cfg = self._cfg
        rules = Rules.from_opts(cfg.local_options())
        walks: list[Iterable[FileJob | Problem]] = [
            walk(
                arg,
                source,
                top_name(
                    source, cfg.src_base, cfg.pair_dests[arg] if cfg.pair_dests is not None else None, self._files
                ),
                files=self._files,
                lone=cfg.lone,
                rules=rules,
            )
            for arg, source in enumerate(cfg.sources)
        ]
        if cfg.precalculate:
            walks = [await settle.in_thread(list, items) for items in walks]  # walks through the docroot's descriptor
            jobs = [j for items in walks for j in items if isinstance(j, FileJob)]
            self.notify_job_size(
                files=sum(not j.is_dir for j in jobs),
                dirs=sum(j.is_dir for j in jobs),
                nbytes=sum(j.size for j in jobs),
            )
        for arg, items in enumerate(walks):
            await self._upload(arg, items)
            with contextlib.suppress(EngineError):  # a source outside the local docroot was never read
                self._sender.finish_arg(cfg.sources[arg])

    async def start_item(self, item: StartItem) -> None:
        arg = self.new_arg()
        rules = Rules.from_opts(self._cfg.local_options())
        jobs = list(walk(arg, item.source, item.dest, files=self._files, lone=False, rules=rules))
        for job in jobs:
            if isinstance(job, FileJob):
                job.start, job.end = item.start, item.end
        await self._upload(arg, jobs)

    async def _upload(self, arg: int, items: Iterable[FileJob | Problem]) -> None:
        await self._sender.send_all(items, self.report_problem)
        self._tally.arg_done(arg)

    def deliver(self, msg: Message) -> bool:
        return self._sender.deliver(msg)

    async def open_stream(self, dest: str | None) -> None:
        """PUT: a file of unknown length to ``dest``, fed by WRITEs until CLOSE (sealed with --file-crypt)."""
        if self._stream is not None:
            raise EngineError(ErrorCode.USAGE, "PUT while another stream is open")
        if not dest:
            raise EngineError(ErrorCode.USAGE, "PUT without Destination")
        from fasp.session.stream import OutStream  # management streams (-M PUT) only

        self._stream = OutStream(self._sender, self._tally, self.new_arg(), dest, self._cfg.file_pass)
        await self._stream.open()

    async def write_stream(self, data: bytes) -> None:
        await self._open_stream("WRITE").write(data)

    async def close_stream(self) -> None:
        stream, self._stream = self._open_stream("CLOSE"), None
        await stream.close()

    def _open_stream(self, kind: str) -> OutStream:
        if self._stream is None:
            raise EngineError(ErrorCode.USAGE, f"{kind} without an open stream (PUT first)")
        return self._stream

    async def abort(self) -> None:
        if self._stream is not None:
            await self._stream.abort()


class Downloads(Feeder):
    def __init__(self, cfg: Config, tally: Tally, channel: Channel, receiver: ReceivingRole) -> None:
        super().__init__(cfg, tally)
        self._channel = channel
        self._receiver = receiver
        self._offered: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._listings: dict[int, Listed] = {}
        # file offers held until the job size is out
        self._held: list[Offer] | None = [] if cfg.precalculate and cfg.sources else None

    async def command_line(self) -> None:
        cfg = self._cfg
        for arg, source in enumerate(cfg.sources):
            pair = cfg.pair_dests[arg] if cfg.pair_dests is not None else None
            await self._channel.send(Get(arg=arg, source=source, rel=pair, lone=cfg.lone))
        for arg in range(len(cfg.sources)):
            await self._landed(arg)

    async def start_item(self, item: StartItem) -> None:
        arg = self.new_arg()
        await self._channel.send(Get(arg=arg, source=item.source, start=item.start, end=item.end, rel=item.dest))
        await self._landed(arg)

    async def _landed(self, arg: int) -> None:
        await self._offered[arg].wait()
        await self._receiver.idle()
        self._tally.arg_done(arg)

    def deliver(self, msg: Message) -> bool:
        return self._receiver.deliver(msg)

    def name_of(self, problem: Problem) -> str:
        """A download's files are named where they land: a remote source the peer could not offer too, by
        the name the peer gave it below the destination (the remote path only if it could give none)."""
        if problem.rel is None:
            return problem.path
        lone = self._cfg.lone and problem.arg < len(self._cfg.sources)  # a START item is never lone
        return self._receiver.landing(problem.rel, lone)

    async def idle(self) -> None:
        await self._receiver.idle()

    def arg_offered(self, arg: int) -> None:
        self._offered[arg].set()

    def listed(self, msg: Listed) -> None:
        self._listings[msg.arg] = msg
        self._release_when_listed()

    def hold(self, msg: Offer) -> bool:
        if self._held is None:
            return False
        self._held.append(msg)
        return True

    def _release_when_listed(self) -> None:
        """--precalculate-job-size on a download: the job's totals must reach the manager before any file
        starts, but the peer offers a source's files right after listing it. So file offers wait in
        ``_held`` until every command-line source is listed; then NOTIFICATION goes out and they are
        delivered in the order they came."""
        count = len(self._cfg.sources)
        if self._held is None or any(arg not in self._listings for arg in range(count)):
            return
        listed = [self._listings[arg] for arg in range(count)]
        self.notify_job_size(
            files=sum(m.files for m in listed), dirs=sum(m.dirs for m in listed), nbytes=sum(m.nbytes for m in listed)
        )
        held, self._held = self._held, None
        for msg in held:
            self._receiver.deliver(msg)  # an offer always is the receiving role's


def feeder(
    cfg: Config,
    files: docroot.Files,
    tally: Tally,
    channel: Channel,
    transport: DataChannel,
    fatal: Callable[[BaseException], None],
) -> Uploads | Downloads:
    """The sending or receiving role for ``cfg.direction`` and the feeder around it; ``files`` is the one
    handle every local file operation goes through, as on a server. A download's files land beneath its
    destination (:class:`fasp.files.docroot.Beneath`): the server names them, and a server may lie."""
    if cfg.direction == "send":
        sender = SendingRole(channel, transport, tally, cfg.local_options(), files=files, file_pass=cfg.file_pass)
        return Uploads(cfg, tally, sender, files)
    from fasp.session.receiving import ReceivingRole  # a download's only: an upload never loads it

    # the peer names what lands: below the destination it resolves beneath it, never out through a link
    beneath = docroot.Beneath(files, cfg.dest)
    receiver = ReceivingRole(
        channel,
        transport,
        tally,
        cfg.local_options(),
        dest=cfg.dest,
        files=beneath,
        file_pass=cfg.file_pass,
        prunes_dest=lambda arg: arg < len(cfg.sources) and _lands_in_dest(cfg, arg),
    )
    receiver.on_fatal = fatal
    return Downloads(cfg, tally, channel, receiver)


def _lands_in_dest(cfg: Config, arg: int) -> bool:
    """Whether download argument ``arg`` lands in DEST itself (a source with no name of its own, or the
    --src-base itself), read from the spellings as the server reads them."""
    pair = cfg.pair_dests[arg] if cfg.pair_dests is not None else None
    try:
        return top_name(cfg.sources[arg], cfg.src_base, pair, docroot.Docroot("/")) == ""
    except EngineError:
        return False
