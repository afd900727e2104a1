"""What the receiving role spends per file: a new file costs one create, and a file's abort needs no watcher task."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from fasp.files.docroot import Docroot
from fasp.files.jobs import FileJob
from fasp.options.peer import PeerOptions
from fasp.session.messages import Abort, FileDone
from fasp.session.receiving import FileBox, ReceivingRole, _unless_aborted
from fasp.session.sending import SendingRole
from fasp.session.tally import Tally
from faspmanager.codes import EngineError, ErrorCode
from tests.datapath.conftest import CLEAR, aio, pair
from tests.session.test_window import _control_pair, run_roles
from tests.support.files import assert_same_file, random_file


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


async def _send(tmp_path, jobs: list[FileJob], files) -> list[str]:
    """Send ``jobs`` through both roles (real transports, a real TCP control channel) into ``files``."""
    tally = Tally(lambda e, f: None, "r")
    async with AsyncExitStack() as stack:
        sending_end, receiving_end = await stack.enter_async_context(pair(key=CLEAR))
        to_receiver, to_sender, server = await _control_pair()
        stack.push_async_callback(server.wait_closed)
        stack.callback(server.close)
        sender = SendingRole(to_receiver, sending_end, Tally(lambda e, f: None, "s"), PeerOptions())
        receiver = ReceivingRole(to_sender, receiving_end, tally, PeerOptions(), dest="/", files=files)
        work = asyncio.gather(*(sender.send_job(j) for j in jobs))
        outcomes = await run_roles(sender, receiver, to_receiver, to_sender, work)
    return list(outcomes)


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
    outcomes = await _send(tmp_path, jobs, files)
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
