"""The receiving role of a session: place each offered file, decide skip/resume, register and ask for pieces.

A file is cut into pieces (one transport file id each). A piece is registered
with the transport BEFORE its ``piece`` message goes out, so no datagram ever
arrives for an unknown id. Pieces of all files are asked for while the bytes
requested and not yet landed fit the path's window (:mod:`fasp.session.window`).
Pieces complete out of order; the watermark (every byte below it written) goes
to a sidecar, which makes resume after a crash exact.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import posixpath
import stat
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from fasp.datapath.datachannel import DataChannel
from fasp.errors import ProtocolError, os_error_code
from fasp.files import attrs, envelope, resume, settle
from fasp.files.digest import file_checksum, prefix_digest, reader
from fasp.files.docroot import Files
from fasp.files.jobs import Rules
from fasp.files.naming import destination, landing
from fasp.options.peer import PeerOptions
from fasp.session.channel import Channel
from fasp.session.messages import (
    Abort,
    Begin,
    Chunk,
    Eof,
    FileDone,
    FileError,
    Keep,
    Kept,
    Message,
    Offer,
    Piece,
    Skip,
    Verified,
    Verify,
)
from fasp.session.sending import FILES_IN_FLIGHT, route
from fasp.session.tally import Tally
from fasp.session.window import PIECE, RequestWindow, piece_size
from faspmanager.codes import EngineError, ErrorCode

MAX_FILES_IN_FLIGHT = 2 * FILES_IN_FLIGHT
"""Files a peer may have offered and not finished: an engine keeps FILES_IN_FLIGHT (a file's end and the next
offer may cross); beyond this the peer is not one of ours and the session ends with a protocol error (each file in
flight holds a task and, once opened, a descriptor: 5,000 offers were 5,000 open files)."""
MAX_KEEP_NAMES = 10_000_000
"""--delete-before-transfer: names the receiver holds at once, over the session's directory arguments, until it has
pruned (a set: about 10 M x 100 bytes beside their characters). A peer's ``keep`` batches are otherwise without end;
past this, or MAX_KEEP_CHARS, the session ends with a protocol error (README, the option's help)."""
MAX_KEEP_CHARS = 1 << 30
"""--delete-before-transfer: characters of the names held at once (MAX_KEEP_NAMES)."""
SESSION_FATAL = frozenset(
    {
        ErrorCode.CONNECTION_ERROR,
        ErrorCode.CONNECTION_TIMEOUT,
        ErrorCode.CONNECTION_LOST,
        ErrorCode.DATA_TRANSFER_TIMEOUT,
    }
)
"""Data-channel failures: they end the session, unlike a file's own error."""


def plan_pieces(ranges: list[tuple[int, int]], piece: int = PIECE) -> Iterator[tuple[int, int]]:
    """Cut [start, end) ranges into pieces of at most ``piece`` bytes, as they are asked for: a peer's size is
    a claim, and a plan of all the pieces of 2**62 bytes would take all the memory there is."""
    for start, end in ranges:
        for lo in range(start, end, piece):
            yield lo, min(lo + piece, end)


def clip(extents: tuple[tuple[int, int], ...] | None, start: int, end: int) -> list[tuple[int, int]]:
    """The parts of [start, end) that hold data, given the sender's data extents (None: all data)."""
    if extents is None:
        return [(start, end)] if start < end else []
    out = []
    for lo, hi in extents:
        lo, hi = max(lo, start), min(hi, end)
        if lo < hi:
            out.append((lo, hi))
    return out


@dataclass
class Keeping:
    """--delete-before-transfer: the names a directory argument keeps, as its ``keep`` batches brought them."""

    names: set[str] = field(default_factory=set)
    chars: int = 0  # of the names, as they came (a name sent twice counts twice)


class ReceivingRole:
    def __init__(
        self,
        channel: Channel,
        transport: DataChannel,
        tally: Tally,
        opts: PeerOptions,
        *,
        dest: str,
        files: Files,
        file_pass: str | None = None,
        prunes_dest: Callable[[int], bool] = lambda arg: True,
    ) -> None:
        """``prunes_dest``: whether --delete-before-transfer may prune the destination itself for argument
        ``arg`` (one whose source has no name of its own lands in it). A server lets its user's session prune
        its own destination; a client only where it asked for such a source: a server may lie."""
        self._channel = channel
        self._prunes_dest = prunes_dest
        self._transport = transport
        # -G and -X: this side writes the destinations and asks for retransmissions
        transport.tune(write_size=opts.write_size, retransmission_max=opts.retransmission_max)
        self._piece = piece_size(opts)
        self._tally = tally
        self._opts = opts
        self._dest = dest
        self._known_dirs: set[str] = set()  # directories found or made (naming.destination): not looked at again
        self._files = files  # every file operation goes through this handle (the docroot on a server)
        self._file_pass = file_pass  # --file-crypt=decrypt: open envelopes on arrival (client side only)
        self._pids = itertools.count(1)
        self._inbox: dict[int, FileBox] = {}
        self._window = RequestWindow(transport.window_bytes, self._piece)
        self.tasks: set[asyncio.Task] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._keep: dict[int, Keeping] = {}  # --delete-before-transfer: names kept so far, per argument
        self._kept_names = self._kept_chars = 0  # held, over the arguments (MAX_KEEP_NAMES, MAX_KEEP_CHARS)
        self._dirs: dict[str, dict] = {}  # received directories' meta with -p: their times are put back (_settle)
        self.on_fatal: Callable[[BaseException], None] = lambda exc: None

    async def idle(self) -> None:
        """Return once no incoming file is in progress."""
        await self._idle.wait()

    def deliver(self, msg: Message) -> bool:
        """Take a sender message; False if it is not for this role."""
        match msg:
            case Keep(arg=arg, top=top, names=names, done=done):
                # what is deleted is the receiver's to allow: only with its own --delete-before-transfer, and
                # only below the source's place in the destination; the destination itself only for a source
                # that lands in it
                if not self._opts.delete_before:
                    raise ProtocolError("the peer sent keep, but this side has no --delete-before-transfer")
                if not any(p not in ("", ".") for p in top.split("/")) and not self._prunes_dest(arg):
                    raise ProtocolError(f"keep names no place below the destination: {top!r}")
                self._hold(self._keep.setdefault(arg, Keeping()), names)
                if done:
                    self._track(asyncio.create_task(self._delete_others(arg, top, self._keep.pop(arg))))
                return True
            case Offer(fid=fid):
                if fid in self._inbox:
                    raise ProtocolError(f"file id {fid} offered again while in flight")
                if len(self._inbox) >= MAX_FILES_IN_FLIGHT:
                    raise ProtocolError(
                        f"the peer has more than {MAX_FILES_IN_FLIGHT} files in flight "
                        f"(an engine keeps at most {FILES_IN_FLIGHT})"
                    )
                box = FileBox()
                self._inbox[fid] = box
                self._track(asyncio.create_task(self._incoming(msg, box)))
                return True
        return route(self._inbox, msg)

    def _track(self, task: asyncio.Task) -> None:
        self.tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._finished)

    def _hold(self, keeping: Keeping, names: tuple[str, ...]) -> None:
        """Add a ``keep`` batch to its argument's names, within MAX_KEEP_NAMES and MAX_KEEP_CHARS held."""
        before = len(keeping.names)
        keeping.names.update(names)
        chars = sum(map(len, names))
        keeping.chars += chars
        self._kept_names += len(keeping.names) - before
        self._kept_chars += chars
        if self._kept_names > MAX_KEEP_NAMES or self._kept_chars > MAX_KEEP_CHARS:
            raise ProtocolError(
                "--delete-before-transfer: the source names more entries to keep than a receiver holds at once "
                f"({MAX_KEEP_NAMES:,} names, {MAX_KEEP_CHARS >> 30} GiB of characters)"
            )

    async def _delete_others(self, arg: int, top: str, keeping: Keeping) -> None:
        """--delete-before-transfer: remove what lies below the directory's destination but not in the source."""
        try:
            root = destination(
                self._dest, top, False, files=self._files, create_dirs=self._opts.create_dirs, known=self._known_dirs
            )
            keep = attrs.with_metafiles(keeping.names, self._opts)
            deleted = await settle.in_thread(self._files.prune, root, keep)
        finally:
            self._kept_names -= len(keeping.names)
            self._kept_chars -= keeping.chars
        self._known_dirs.clear()  # the prune may have taken some
        await self._channel.send(Kept(arg=arg, deleted=deleted))

    def _finished(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not self.tasks:
            self._idle.set()
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self.on_fatal(exc)

    async def _incoming(self, msg: Offer, box: FileBox) -> None:
        fid, rel, arg = msg.fid, msg.rel, msg.arg
        files = self._files
        key = None  # events name a received file by where it lands (as the client sees it)
        try:
            target = destination(
                self._dest, rel, msg.lone, files=files, create_dirs=self._opts.create_dirs, known=self._known_dirs
            )
            key = files.display(target)
            if stat.S_ISLNK(msg.mode):
                await self._place_link(msg, target, key)
                return
            if stat.S_ISDIR(msg.mode):
                files.makedirs(target)
                if msg.meta is not None:
                    self._apply(target, key, msg.meta, directory=True)
                    if self._opts.preserve_atime or self._opts.preserve_mtime:  # the times a landing child moves
                        self._dirs[posixpath.normpath(target)] = msg.meta
                self._settle(target)
                await self._channel.send(FileDone(fid=fid, written=0, checksum=None))
                return
            await self._receive_file(msg, box, target, key)
        except (EngineError, OSError) as exc:
            if isinstance(exc, ProtocolError):
                raise
            code = exc.code if isinstance(exc, EngineError) else os_error_code(exc, ErrorCode.DISK_WRITE)
            # an OS error names the file, or, before it had a place, the destination it was going to
            where = key or files.display(self._dest or ".")
            desc = exc.description if isinstance(exc, EngineError) else f"{where}: {exc.strerror}"
            if code in SESSION_FATAL:
                raise
            key = key or self.landing(rel, msg.lone)
            self._tally.failed(key, arg, code, desc)  # before the sender hears: ARGSTOP follows it
            await self._channel.send(FileError(fid=fid, arg=arg, path=rel, code=int(code), desc=desc))
        finally:
            self._inbox.pop(fid, None)

    def landing(self, rel: str, lone: bool) -> str:
        """How events name the file ``rel`` when it failed before it had a place: where it would have landed."""
        return self._files.display(
            landing(self._dest, rel, lone, files=self._files, create_dirs=self._opts.create_dirs)
        )

    async def _place_link(self, msg: Offer, target: str, key: str) -> None:
        """A copied symbolic link: replace an old link (or, with copy+force, a file) by the new one."""
        fid, arg, text = msg.fid, msg.arg, msg.link
        if not text or "\0" in text:
            raise ProtocolError("a link message needs the link's target text")
        if not Rules.from_opts(self._opts).copies_links:  # a sender of ours follows links, as it was told
            raise ProtocolError(f"the peer sent link {msg.rel!r} where links are {self._opts.symlinks!r}")
        kind = self._files.kind(target, follow=False)
        if kind is not None:
            if kind != stat.S_IFLNK and self._opts.symlinks != "copy+force":
                reason = "destination exists and is not a link (--symbolic-links=copy+force replaces it)"
                self._tally.skipped(key, arg, 0, reason)
                await self._channel.send(Skip(fid=fid, reason=reason))
                return
            if kind == stat.S_IFDIR:
                raise EngineError(ErrorCode.IS_DIR, f"destination {key!r} is a directory")
            self._files.unlink(target)
        self._tally.started(key, arg, 0, 0)
        self._files.symlink(text, target)  # 41 (this file alone) if the target leaves the docroot
        self._settle(target)
        self._tally.stopped(key, arg, 0, 0, None)
        await self._channel.send(FileDone(fid=fid, written=0, checksum=None))

    def _create(self, target: str, mode: int) -> int | None:
        """The destination as a new file of ours, or None if something is there already. Most files of a
        new tree are new: one exclusive create then answers what a look, the overwrite and resume rules and
        the sidecar's removal would (nothing there: nothing to skip, resume, save or clear), in one call."""
        try:
            return self._files.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:  # a file, a directory, a link (O_EXCL never follows one)
            return None

    async def _receive_file(self, msg: Offer, box: FileBox, target: str, key: str) -> None:
        fid, arg, size, ranged = msg.fid, msg.arg, msg.size, msg.span
        if ranged and self._file_pass is not None:  # decrypt opens envelopes whole; a range may be of one (no
            raise envelope.range_refused(key)  # header in it to tell) and would land as bytes that never open
        suffix = self._opts.partial_suffix
        partial = target + suffix if suffix and not ranged else target
        mode = msg.mode & 0o777 or 0o644
        created = None
        if size is not None and not ranged and partial == target:  # ranges: their own rules (a range lands
            created = self._create(target, mode)  # into what other ranges wrote)
        if created is not None:
            return await self._land(msg, box, target, key, target, created, 0, fresh=True)
        found = self._files.look(target)  # once: the directory check here, the overwrite rules in _decide
        if found is not None and stat.S_ISDIR(found.st_mode):
            raise EngineError(ErrorCode.IS_DIR, f"destination {key!r} is a directory")
        if size is None:
            return await self._receive_stream(fid, arg, box, target, key)
        if ranged:
            start, end = ranged
            flags = os.O_RDWR | os.O_CREAT
        else:
            decided, end = await self._decide(msg, size, box, target, partial, key, found)
            if decided is None:
                return
            start = decided
            flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if start == 0 else 0)
            if (
                start == 0 and self._opts.save_before_overwrite and self._files.kind(target) == stat.S_IFREG
            ):  # the name (a link too) moves aside, as before
                self._files.replace(target, _saved_name(self._files, target))
        # a partial file is ours alone: a link there is refused, never followed (the final name may be an
        # existing link to a file inside, written through as before; the handle never follows one out)
        nofollow = os.O_NOFOLLOW if partial != target else 0
        fd = self._files.open(partial, flags | nofollow, mode)
        await self._land(msg, box, target, key, partial, fd, start, fresh=False)

    async def _land(
        self,
        msg: Offer,
        box: FileBox,
        target: str,
        key: str,
        partial: str,
        fd: int,
        start: int,
        *,
        fresh: bool,
    ) -> None:
        """Ask for the file's bytes from ``start`` into ``fd`` (ours now: closed here), then finish it. ``fresh``:
        :meth:`_create` made ``fd``, so no sidecar is looked for: one whose file was removed describes
        another file, and if a new inode took the old number, a ``-k 1`` resume trusts a shorter file's size
        with or without it (``-k 2``/``3`` compare digests)."""
        fid, arg, size, ranged = msg.fid, msg.arg, msg.size, msg.span
        assert size is not None
        end = ranged[1] if ranged else size
        mark = None
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if not ranged and start:
                os.ftruncate(fd, start)
            ranges = clip(msg.extents, start, end)
            if not (start == 0 and ranges and ranges[0][0] == 0):  # else the first piece says where it begins
                await self._channel.send(Begin(fid=fid, start=start))
            self._tally.started(key, arg, size, start)
            # a small file (one piece) lands with one write once all of it arrived (transport "whole"): it
            # never has a hole, so a new one is either empty or complete, which is exactly what a sidecar of
            # watermark 0 told a later resume. It needs none then: that was two of the three files a small
            # file cost (the sidecar and its temporary, created and renamed for every file). A resumed one
            # (start > 0) keeps its sidecar: it is what marks the shorter file as our unfinished transfer.
            whole = len(ranges) == 1 and ranges[0][1] - ranges[0][0] <= PIECE  # (one piece: self._piece >= PIECE)
            if ranges and not ranged and not (whole and start == 0):  # the file may have holes from now on:
                mark = resume.Watermark(self._files, partial, ident, size, msg.mtime)  # say where its good part ends
            try:
                if mark is not None:
                    mark.mark(start)
                written = await _unless_aborted(box, self._pieces(fid, fd, ranges, mark, whole))
            finally:
                if mark is not None:
                    mark.close()
            if self._opts.checksum == "none":  # a truncate at most: not worth a thread hop
                checksum = self._finish_fd(fd, size, ranged)
            else:
                checksum = await settle.in_thread(self._finish_fd, fd, size, ranged)
            # through the descriptor written (fchown, futimens, fsetxattr): a link swapped in for the name
            # meanwhile cannot redirect them. A range sets them after its own writes, so the range that lands
            # last leaves them right; a whole file before its final name appears, so it appears complete.
            if ranged or self._file_pass is None:
                attrs.apply(fd, key, msg.meta, self._opts, files=self._files, named=target)
        finally:
            os.close(fd)
        if not ranged:
            if partial != target:
                self._files.replace(partial, target)
            if mark is not None or not fresh:  # a fresh file's only sidecar is one it made
                resume.clear_watermark(self._files, partial)
            if self._file_pass is not None:  # the plain file is a new one: it gets the attributes
                plain = await asyncio.to_thread(envelope.open_in_place, target, self._file_pass, self._files) or target
                if msg.meta is not None:
                    self._apply(plain, self._files.display(plain), msg.meta)
            self._settle(target)
        self._tally.stopped(key, arg, size, written, checksum)
        await self._channel.send(FileDone(fid=fid, written=written, checksum=checksum))

    async def _decide(
        self,
        msg: Offer,
        size: int,
        box: FileBox,
        target: str,
        partial: str,
        key: str,
        found: os.stat_result | None,
    ) -> tuple[int | None, int]:
        """Overwrite and resume rules: (start, end), or (None, _) once the file was skipped. ``found``: what is
        at ``target`` (a link to a file inside is that file, as before)."""
        fid, arg, mtime = msg.fid, msg.arg, msg.mtime
        final = _regular(found)
        part = final if partial == target else _existing(self._files, partial, follow=False)
        watermark = resume.read_watermark(self._files, partial, part.ident, size, mtime) if part is not None else None
        verdict = resume.plan(
            size=size,
            mtime=mtime,
            overwrite=self._opts.overwrite,
            resume=self._opts.resume,
            final=final,
            partial=part,
            watermark=watermark,
            sealed=msg.sealed,
        )
        if verdict.action == "verify":
            seen = final if verdict.start >= size else part
            assert seen is not None, "plan verifies only a file it found: the final one whole, else the partial"
            fd = self._files.open(
                target if seen is final else partial, os.O_RDONLY | (0 if seen is final else os.O_NOFOLLOW)
            )
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != seen.ident:  # not the file just judged (replaced since): no digest
                    verdict = resume.Plan("send", 0)
                else:
                    digest = await settle.in_thread(prefix_digest, reader(fd), verdict.start, self._opts.resume == 2)
            finally:
                os.close(fd)
        if verdict.action == "verify":
            await self._channel.send(Verify(fid=fid, have=verdict.start, digest=digest))
            reply = await box.get()
            if not isinstance(reply, Verified):
                raise ProtocolError(f"expected verified for file {fid}, got {reply.TYPE}")
            verdict = resume.after_verify(verdict, size, reply.ok)
        if verdict.action == "skip":
            self._tally.skipped(key, arg, size, verdict.reason)
            await self._channel.send(Skip(fid=fid, reason=verdict.reason))
            return None, size
        return verdict.start, size

    async def _request(self, fid: int, fd: int, lo: int, hi: int, landed, whole: bool = False) -> asyncio.Task:
        """Register bytes [lo, hi) as a new piece, then ask the sender for it; ``landed(lo, hi)`` runs
        once they are written. The caller has acquired the piece's room in the window; the piece gives back
        its bytes as they land, and the rest once it is done (a done callback: it runs before the caller's own,
        which may have to see a failure before the room wakes its loop)."""
        pid = next(self._pids)
        window, progress = self._window, self._tally.progress
        got = 0

        def wrote(n: int) -> None:
            nonlocal got
            got += n
            window.landed(n)
            progress(n)

        async def receive() -> None:
            try:
                await self._transport.receive(pid, fd, lo, hi, wrote, whole=whole)
            except asyncio.CancelledError:
                if got == hi - lo:  # the file ended (an abort) as its last writes drained: the piece landed
                    landed(lo, hi)
                raise
            landed(lo, hi)

        task = asyncio.create_task(receive())
        task.add_done_callback(lambda _: window.release(hi - lo - got))
        await asyncio.sleep(0)  # the task registers the piece before the sender hears of it
        await self._channel.send(Piece(fid=fid, pid=pid, start=lo, end=hi))
        return task

    async def _pieces(
        self,
        fid: int,
        fd: int,
        ranges: list[tuple[int, int]],
        mark: resume.Watermark | None,
        whole: bool = False,
    ) -> int:
        """Request every piece of ``ranges`` as the window has room; the bytes written."""
        pending: set[int] = set()
        tasks = settle.Running()
        written = 0
        total = sum(hi - lo for lo, hi in ranges)
        upcoming = 0  # where the first piece not yet asked for starts (nothing from there has landed)

        def landed(lo: int, hi: int) -> None:
            nonlocal written
            written += hi - lo
            pending.discard(lo)
            # synchronous: one writer at a time, and it is one pwrite. Not once the last piece has landed: the
            # sidecar is removed right after, and until then the previous watermark is still true.
            if mark is not None and written < total:
                mark.mark(min(pending, default=upcoming))

        try:
            for lo, hi in plan_pieces(ranges, self._piece):
                upcoming = lo
                await self._window.acquire(hi - lo)
                if tasks.failed is not None:  # a failed piece (its write failed: disk full, EIO...) never lands:
                    self._window.release(hi - lo)  # its room woke us, stop asking (the real error is told, not
                    break  # the sender's stall timeout, 40)
                pending.add(lo)
                tasks.add(await self._request(fid, fd, lo, hi, landed, whole))
            await tasks.wait()
        finally:
            # a cancelled piece still drains the writes it queued into fd (and may mark them): the caller closes
            # fd and the watermark once this returns
            await tasks.cancel()
        return written

    async def _receive_stream(self, fid: int, arg: int, box: FileBox, target: str, key: str) -> None:
        """PUT/WRITE/CLOSE: the sender announces chunks as they come; bytes land at their offsets."""
        fd = self._files.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        tasks = settle.Running()
        written = 0

        def landed(lo: int, hi: int) -> None:
            nonlocal written
            written += hi - lo

        try:
            await self._channel.send(Begin(fid=fid, start=0))
            self._tally.started(key, arg, 0, 0)
            while True:
                match await box.get():
                    case Chunk(start=start, end=end):
                        await self._window.acquire(end - start)
                        tasks.add(await self._request(fid, fd, start, end, landed))
                    case Eof(size=size):
                        await tasks.wait()
                        checksum = await settle.in_thread(self._finish_fd, fd, size, None)
                        break
                    case other:
                        raise ProtocolError(f"unexpected {other.TYPE} in a stream")
        finally:
            await tasks.cancel()  # their queued writes land before fd's number can be reused
            os.close(fd)
        self._tally.stopped(key, arg, size, written, checksum)
        await self._channel.send(FileDone(fid=fid, written=written, checksum=checksum))

    def _settle(self, child: str) -> None:
        """``child`` landed in a received directory, which moved that directory's times: put back
        the preserved ones."""
        parent = posixpath.dirname(posixpath.normpath(child))
        if parent in self._dirs:
            fd = self._files.opendir(parent)
            try:
                attrs.apply_times(fd, parent, self._dirs[parent], self._opts)
            finally:
                os.close(fd)

    def _apply(self, path: str, key: str, meta: dict, directory: bool = False) -> None:
        """Metadata for a file or directory this side did not hold open: through a descriptor of it."""
        fd = self._files.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else os.O_NOFOLLOW))
        try:
            attrs.apply(fd, key, meta, self._opts, files=self._files, named=path)
        finally:
            os.close(fd)

    def _finish_fd(self, fd: int, size: int, ranged: tuple[int, int] | None) -> str | None:
        if not ranged:
            if os.fstat(fd).st_size != size:  # a longer file resumed into, a trailing hole: not a file landed whole
                os.ftruncate(fd, size)  # (on ext4 a truncate to the same size still costs a journalled update)
        elif os.fstat(fd).st_size < ranged[1]:  # a range ending in a hole still ends where it says
            os.ftruncate(fd, ranged[1])
        algorithm = self._opts.checksum
        if algorithm == "none":
            return None
        return file_checksum(fd, size, algorithm)


T = TypeVar("T")


class FileBox(asyncio.Queue[Message]):
    """One incoming file's messages. While its bytes are asked for (:func:`_unless_aborted`) the only one
    expected is an abort, and the first to arrive interrupts the file's task at once: no task of its own
    waits for it (two per file were a tenth of a receiver's time with thousands of small files)."""

    def __init__(self) -> None:
        super().__init__()
        self.watcher: asyncio.Task | None = None
        self.interrupted = False

    def put_nowait(self, item: Message) -> None:
        super().put_nowait(item)
        if self.watcher is not None and not self.interrupted:
            self.interrupted = True
            self.watcher.cancel()


async def _unless_aborted(box: FileBox, work: Coroutine[object, object, T]) -> T:
    """``work``'s result, unless the sender aborts the file first (its source failed to read: 35): then the
    pieces stop and the file fails with the sender's error (what landed stays, with its watermark)."""
    task = asyncio.current_task()
    assert task is not None
    if box.empty():
        box.watcher = task
        try:
            result = await work
        except asyncio.CancelledError:
            if not box.interrupted or task.uncancel() > 0:  # cancelled by someone else too: that wins
                raise
        else:
            if box.interrupted:  # the work ended before the interruption reached it: it stands
                task.uncancel()
            return result
        finally:
            box.watcher = None
    else:
        work.close()
    msg = box.get_nowait()
    if not isinstance(msg, Abort):
        raise ProtocolError(f"unexpected {msg.TYPE} while file {getattr(msg, 'fid', None)} is being sent")
    raise EngineError(ErrorCode.DISK_READ, msg.desc)


def _existing(files: Files, path: str, *, follow: bool) -> resume.Existing | None:
    """The regular file at ``path`` (through a link inside the docroot with ``follow``; a partial file is
    never looked at through one: nothing is resumed into a link)."""
    try:
        st = files.stat(path, follow=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise
    except EngineError as exc:  # a link there that leads out (41) or loops (63): not a file of ours
        if exc.code in (ErrorCode.BAD_PATH, ErrorCode.LINK_LOOP):
            return None
        raise
    return _regular(st)


def _regular(st: os.stat_result | None) -> resume.Existing | None:
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    return resume.Existing(st.st_size, st.st_mtime, (st.st_dev, st.st_ino))


def _saved_name(files: Files, path: str) -> str:
    """--save-before-overwrite, as IBM names it: ``name.yyyy.mm.dd.hh.mm.ss.index.ext`` (the stamp before the
    extension; ``name.stamp.index`` without one), index counting from 1 within a second."""
    stem, ext = posixpath.splitext(path)
    stamp = time.strftime("%Y.%m.%d.%H.%M.%S")
    for index in itertools.count(1):
        candidate = f"{stem}.{stamp}.{index}{ext}"
        if files.kind(candidate, follow=False) is None:
            return candidate
    raise AssertionError("unreachable")
