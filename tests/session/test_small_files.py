"""What a file costs the two roles: a new one is one create, its abort needs no watcher task, a cold one no wait."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import mmap
import os
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from fasp.files.docroot import Docroot, handle
from fasp.files.jobs import FileJob
from fasp.options.peer import PeerOptions
from fasp.session.channel import Channel, link_bytes
from fasp.session.messages import Abort, Bye, FileDone, Offer, Piece, encode
from fasp.session.receiving import FileBox, ReceivingRole, _unless_aborted
from fasp.session.sending import FILES_IN_FLIGHT, SendingRole
from fasp.session.tally import Tally
from faspmanager.codes import EngineError, ErrorCode
from tests.datapath.conftest import CLEAR, aio, pair
from tests.session.test_window import _control_pair, run_roles
from tests.support.files import assert_same_file, assert_same_tree, random_file


class Recording:
    """A docroot handle that notes each call that reaches the file system (name, first argument), then makes it."""

    PURE = frozenset({"display", "norm"})  # path arithmetic only

    def __init__(self, files: Docroot) -> None:
        self._files = files
        self.calls: list[tuple[str, object]] = []

    def __getattr__(self, name: str):
        real = getattr(self._files, name)
        if not callable(real) or name in self.PURE:
            return real

        def call(*args, **kw):
            self.calls.append((name, args[0] if args else None))
            return real(*args, **kw)

        return call


async def _send(
    jobs: list[FileJob],
    files,
    *,
    dest: str = "/",
    watch=None,
    offered=None,
    opts: PeerOptions | None = None,
    told=None,
    argument: bool = False,
) -> list[str]:
    """Send ``jobs`` through both roles (real transports, a real TCP control channel) into ``files``; ``watch``
    sees each message to the sender before it does, ``offered`` each one to the receiver; ``told(event, fields)``
    each event of the sender; ``opts`` are the session's (both roles', as hello carries them). ``argument``:
    ``jobs`` (any iterable) is one source argument's, sent as one (send_all: no outcomes, problems fail)."""
    async with AsyncExitStack() as stack:
        sending_end, receiving_end = await stack.enter_async_context(pair(key=CLEAR))
        to_receiver, to_sender, server = await _control_pair()
        stack.push_async_callback(server.wait_closed)
        stack.callback(server.close)
        opts = opts or PeerOptions()
        sender = SendingRole(to_receiver, sending_end, Tally(told or (lambda e, f: None), "s"), opts)
        tally = Tally(lambda e, f: None, "r")
        receiver = ReceivingRole(to_sender, receiving_end, tally, opts, dest=dest, files=files)
        if offered is not None:
            deliver = receiver.deliver
            receiver.deliver = lambda msg: offered(msg) or deliver(msg)  # type: ignore[method-assign]

        def tap(msg) -> bool:
            if watch is not None:
                watch(msg)
            return sender.deliver(msg)

        if argument:
            work = sender.send_all(jobs, lambda problem: pytest.fail(str(problem)))
        else:
            work = asyncio.gather(*(sender.send_job(j) for j in jobs))
        outcomes = await run_roles(sender, receiver, to_receiver, to_sender, work, tap=tap)
    return list(outcomes or ())


@aio
async def test_a_new_file_lands_with_one_create_and_no_look_or_sidecar_removal(tmp_path):
    """100 new 8 KiB files into a docroot: each is opened once (the exclusive create) and nothing else names it,
    not a look before nor its sidecar's removal after (three calls of the handle per file before, a fifth of a
    receiver's time). Files already there still meet the rules: a shorter one is replaced, a directory in a
    file's place fails that file alone (IS_DIR), and a sidecar left without its file is left as found."""
    src, root = tmp_path / "src", tmp_path / "root"
    src.mkdir()
    (root / "d" / "f007.bin").mkdir(parents=True)  # a directory where a file goes
    (root / "d" / "f003.bin").write_bytes(b"older and shorter")
    orphan = root / "d" / ".f005.bin.fasp-resume"
    orphan.write_text("{}")
    names = [f"f{i:03d}.bin" for i in range(100)]
    for name in names:
        random_file(src / name, 8192)
    files = Recording(Docroot(str(root)))
    jobs = [FileJob(arg=0, path=str(src / n), rel=f"d/{n}", size=8192) for n in names]
    outcomes = await _send(jobs, files)
    assert outcomes == ["failed" if n == "f007.bin" else "passed" for n in names]
    for name in names:
        if name != "f007.bin":
            assert_same_file(src / name, root / "d" / name)
    assert orphan.read_text() == "{}"
    named = {}
    for call, path in files.calls:
        named.setdefault(path, []).append(call)
    for name in names:
        calls = named.pop(f"/d/{name}", []) + named.pop(f"/d/.{name}.fasp-resume", [])
        if name == "f003.bin":  # there: the create refused, a look, its sidecar looked for, the file truncated,
            assert calls == ["open", "look", "open", "open", "unlink"], calls  # and the sidecar cleared
        elif name == "f007.bin":
            assert calls == ["open", "look"], calls
        else:
            assert calls == ["open"], (name, calls)
    assert named == {"/": ["isdir"], "/d": ["makedirs"]}, named  # the root and the directory, once each


@aio
async def test_a_source_of_many_files_holds_the_tasks_of_those_in_flight_only(tmp_path):
    """3,000 files of one source argument: the tasks alive (both roles, done or not) stay what the files in
    flight need as the files go by; the sender kept every file's finished task until the argument ended (a tree
    of millions: millions of tasks)."""
    src, root = tmp_path / "src", tmp_path / "root"
    src.mkdir()
    (root / "d").mkdir(parents=True)
    count = 3000
    for i in range(count):
        (src / f"{i:04d}.bin").write_bytes(os.urandom(64))
    alive: list[int] = []

    def jobs():
        for i in range(count):
            if i % 1000 == 999:
                gc.collect()
                alive.append(sum(isinstance(o, asyncio.Task) for o in gc.get_objects()))
            yield FileJob(arg=0, path=str(src / f"{i:04d}.bin"), rel=f"d/{i:04d}.bin", size=64)

    await _send(jobs(), Docroot(str(root)), argument=True)
    assert assert_same_tree(src, root / "d") == count
    # at most a file's task and its piece's per file in flight on each side, and the session's own few
    assert max(alive) < 5 * FILES_IN_FLIGHT, alive


@aio
async def test_an_offer_carries_only_the_meta_the_options_apply(tmp_path):
    """Without -p nothing of a file's meta is applied, yet every offer carried its times (twice: the offer's own
    atime, which no receiver read, and meta's), owner and an empty attribute list: 290 bytes of JSON per 8 KiB
    file, 180 now. With -p and the owner kept they travel, and land."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    random_file(src / "f.bin", 8192)
    uid, gid = os.getuid(), os.getgid()
    job = FileJob(arg=0, path=str(src / "f.bin"), rel="src10000/f01234.bin", size=8192)
    keep = PeerOptions(preserve_atime=True, preserve_mtime=True, preserve_uid=True, preserve_gid=True)
    for opts, meta in (
        (PeerOptions(), None),
        (keep, {"atime_ns": 1_000_000_123, "mtime_ns": 2_000_000_456, "uid": uid, "gid": gid}),
    ):
        os.utime(src / "f.bin", ns=(1_000_000_123, 2_000_000_456))  # a read moves an atime older than mtime
        offers: list[Offer] = []
        outcome = await _send(
            [job],
            handle(None),
            dest=str(dst),
            offered=lambda m, offers=offers: offers.append(m) if isinstance(m, Offer) else None,
            opts=opts,
        )
        assert outcome == ["passed"]
        landed = dst / "src10000" / "f01234.bin"
        times = landed.stat().st_atime_ns, landed.stat().st_mtime_ns  # before a read moves the atime
        assert_same_file(src / "f.bin", landed)
        assert [o.meta for o in offers] == [meta]
        if meta is None:
            assert len(encode(offers[0])) <= 180, encode(offers[0])
            assert times[1] != 2_000_000_456  # nothing applied: the time of its landing
        else:
            assert times == (1_000_000_123, 2_000_000_456)
        landed.unlink()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


@aio
async def test_a_file_landing_from_zero_has_no_begin_its_first_piece_says_it(tmp_path):
    """Per small file the receiver sent begin, piece and fdone; a file landing from 0 whose first piece starts
    there now goes without the begin (a quarter of the control messages a small file costs). The sender still
    counts each file as started where it starts: from 0, or from a resume's offset, which keeps its begin, as
    does an empty file (no piece to say it)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    sizes = {"new.bin": 8192, "empty.bin": 0, "resumed.bin": 3 << 20}
    for name, size in sizes.items():
        random_file(src / name, size)
    (dst / "resumed.bin").write_bytes((src / "resumed.bin").read_bytes()[: 1 << 20])  # an earlier, cut-short copy
    heard: dict[int, list[str]] = {}
    starts: dict[str, int] = {}

    def told(event: str, fields: dict) -> None:
        if event == "START":
            starts[os.path.basename(fields["File"])] = fields["StartByte"]

    jobs = [FileJob(arg=0, path=str(src / n), rel=n, size=size) for n, size in sizes.items()]
    outcomes = await _send(
        jobs,
        handle(None),
        dest=str(dst),
        watch=lambda msg: heard.setdefault(msg.fid, []).append(type(msg).__name__),
        opts=PeerOptions(resume=1),
        told=told,
    )
    assert outcomes == ["passed"] * 3
    for name in sizes:
        assert_same_file(src / name, dst / name)
    assert starts == {"new.bin": 0, "empty.bin": 0, "resumed.bin": 1 << 20}
    new, empty, resumed = (heard[fid] for fid in sorted(heard))  # fids count up in offer order
    assert new == ["Piece", "FileDone"], heard
    assert empty == ["Begin", "FileDone"], heard
    assert resumed[0] == "Begin" and resumed[1:] == ["Piece"] * 4 + ["FileDone"], heard


def _resident(path) -> int:
    """Pages of ``path`` in the page cache (mincore(2) on a mapping of it; mapping reads nothing)."""
    size = os.path.getsize(path)
    pages = -(-size // mmap.PAGESIZE)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        try:
            vec = ctypes.create_string_buffer(pages)
            assert _libc.mincore(addr, size, vec) == 0, ctypes.get_errno()
            return sum(b & 1 for b in vec.raw[:pages])
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def _evicted_file(size: int, *dirs) -> str:
    """A file of random bytes none of which is in the page cache, in the first of ``dirs`` whose file system
    can drop them (tmpfs cannot)."""
    for where in dirs:
        fd, path = tempfile.mkstemp(dir=where)
        os.write(fd, os.urandom(size))
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        if _resident(path) == 0:
            return path
        os.unlink(path)
    raise AssertionError(f"no file system among {dirs} drops a file's pages")


@aio
async def test_an_offered_file_is_read_ahead_before_its_first_piece_is_asked_for(tmp_path):
    """The sender reads a file's bytes in its event loop: a file not in the page cache stalled every file in flight
    while the disk answered (10,000 cold 8 KiB files: 1.4 s of reads in the loop, 0.09 s with read-ahead). Its
    first bytes are now asked of the kernel as the file is offered, so they are in memory, or on their way,
    when the receiver's first piece request comes back."""
    src = _evicted_file(256 << 10, tmp_path, "/var/tmp")
    try:
        dst = tmp_path / "dst"
        dst.mkdir()
        at_first_piece: list[int] = []

        def watch(msg) -> None:
            if isinstance(msg, Piece) and not at_first_piece:  # the loop stands still here, so nothing of the
                deadline = time.monotonic() + 2  # sender's reads the file: what lands in the cache was read ahead
                while _resident(src) == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                at_first_piece.append(_resident(src))

        job = FileJob(arg=0, path=src, rel="cold.bin", size=256 << 10)
        assert await _send([job], handle(None), dest=str(dst), watch=watch) == ["passed"]
        assert_same_file(Path(src), dst / "cold.bin")
        assert at_first_piece[0] > 0, at_first_piece
    finally:
        os.unlink(src)


def _watched(box: FileBox, landed: list[str]):
    async def work() -> str:
        try:
            await asyncio.sleep(10)
            return "landed"
        finally:
            landed.append("stopped")

    return _unless_aborted(box, work())


@aio
async def test_an_abort_interrupts_the_files_own_task():
    """The sender's abort (its source failed to read) stops the file's pieces at once and fails the file (35)."""
    box, landed = FileBox(), []
    task = asyncio.create_task(_watched(box, landed))
    await asyncio.sleep(0.01)
    box.put_nowait(Abort(fid=1, desc="read failed"))
    with pytest.raises(EngineError) as caught:
        await asyncio.wait_for(task, 1)
    assert caught.value.code == ErrorCode.DISK_READ and landed == ["stopped"]


@aio
async def test_an_abort_already_there_stops_the_file_before_any_piece():
    box, landed = FileBox(), []
    box.put_nowait(Abort(fid=1, desc="read failed"))
    with pytest.raises(EngineError):
        await _watched(box, landed)
    assert landed == []


@aio
async def test_a_session_cancel_is_not_taken_for_an_abort():
    """The session ending cancels the file's task; an abort arriving at the same moment must not swallow that."""
    box, landed = FileBox(), []
    task = asyncio.create_task(_watched(box, landed))
    await asyncio.sleep(0.01)
    task.cancel()
    box.put_nowait(Abort(fid=1, desc="read failed"))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled() and landed == ["stopped"]


@aio
async def test_another_message_while_pieces_are_asked_for_is_a_protocol_error():
    box, landed = FileBox(), []
    task = asyncio.create_task(_watched(box, landed))
    await asyncio.sleep(0.01)
    box.put_nowait(FileDone(fid=1, written=0, checksum=None))
    with pytest.raises(EngineError) as caught:
        await task
    assert caught.value.code == ErrorCode.FASP_PROTO and landed == ["stopped"]


@aio
async def test_work_that_ends_first_stands_and_a_late_abort_is_left_unread():
    box = FileBox()

    async def work() -> str:
        return "landed"

    assert await _unless_aborted(box, work()) == "landed"
    box.put_nowait(Abort(fid=1, desc="late"))
    assert box.qsize() == 1 and not box.interrupted


class CountingWriter:
    """A real stream writer that counts the writes it is given (each is a syscall, an SSH packet, its encryption)
    and notes their sizes."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer, self.writes = writer, 0
        self.sizes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.sizes.append(len(data))
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


@aio
async def test_per_file_messages_of_many_loop_rounds_leave_in_one_write() -> None:
    """A receiver's loop turns for every batch of datagrams, and each round's fdone went in a write of its own:
    10,000 small files were 10,000 SSH packets. Sent over ten rounds within FLUSH_AFTER, they leave together,
    in order, and what is not per-file goes at once, behind them."""
    server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    counting = CountingWriter(writer)
    sender, (their_reader, their_writer) = Channel(reader, counting), await accepted
    receiver = Channel(their_reader, their_writer)
    try:
        dones = [FileDone(fid=i, written=8192, checksum=None) for i in range(10)]
        for done in dones:
            await sender.send(done)
            await asyncio.sleep(0)  # the next round of the event loop
        await sender.send(Bye())
        assert counting.writes == 1
        assert [await receiver.recv() for _ in range(11)] == [*dones, Bye()]
    finally:
        sender.close()
        receiver.close()
        server.close()


@aio
async def test_each_write_of_the_senders_control_channel_is_charged_to_its_data_channel() -> None:
    """Offers share the path with the file bytes, so the sending role has its channel tell the data channel what
    each write costs the link: the bytes, SSH's framing and MAC, TCP/IP's headers per segment."""
    server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    counting = CountingWriter(writer)
    channel, (_, their_writer) = Channel(reader, counting), await accepted
    async with pair(key=CLEAR) as (sending_end, _):
        charged: list[int] = []
        sending_end.charge = charged.append  # type: ignore[method-assign]
        SendingRole(channel, sending_end, Tally(lambda e, f: None, "s"), PeerOptions())
        try:
            for fid in range(1, 6001):
                await channel.send(Offer(fid=fid, arg=0, rel=f"d/f{fid:05}.bin", size=8192, mtime=1.5, mode=0o100644))
            await channel.send(Bye())
            written = counting.sizes
            assert len(charged) == len(written) >= 2 and sum(written) > 64 << 10
            assert charged == [link_bytes(n) for n in written]
            assert all(c >= n + 52 * -(-n // 1448) + 38 for c, n in zip(charged, written, strict=True))
        finally:
            channel.close()
            their_writer.close()
            server.close()


@aio
async def test_offers_of_a_deep_directory_stay_within_what_a_frame_may_share():
    """2,000 offers whose names share a 2,000-character directory, sent at once: the channel's frames never
    share more than the receiver accepts (messages.SHARED_MAX), and every offer arrives whole."""
    top = "/".join(["d" * 99] * 20)
    offers = [Offer(fid=i, arg=0, rel=f"{top}/f{i:05d}", size=8192, mtime=1.7e9, mode=0o100644) for i in range(2000)]
    a, b, server = await _control_pair()
    try:
        for offer in offers:
            await a.send(offer)
        got = [await asyncio.wait_for(b.recv(), 10) for _ in offers]
        assert got == offers
    finally:
        a.close()
        b.close()
        server.close()
