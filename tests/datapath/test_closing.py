"""A descriptor is closed only after the work using it has ended: the attack on it is a late write, which lands
in whatever file the kernel gave the number to next. Each test closes the descriptor the moment the code under
test returns, gives its number to a victim file, and checks the victim stays empty."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from fasp.datapath import udpchannel
from fasp.files import settle

from .conftest import aio, pair

pytestmark = pytest.mark.timeout(60)

SLOW_WRITE_S = 0.02


def _victim(tmp_path, fd: int) -> None:
    """Close ``fd`` as the session would, and give its number to the next file at once: ``fd`` now names the
    victim. A fresh open would get the number only when it is the lowest free one, which a busy test process
    does not promise; dup2 onto a number this test owns is the same outcome without the race."""
    other = os.open(tmp_path / "victim", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    os.dup2(other, fd)
    os.close(other)


@aio
async def test_a_receive_cancelled_twice_drains_its_writes_before_it_returns(tmp_path, monkeypatch):
    """A piece cancelled, then cancelled again while its queued writes drain (the file aborted, then the
    session ending), still returns only once they landed. A slow disk holds the writes queued; the seam is the
    writer's write function (a real disk that slow is not at hand), which still writes for real."""
    real, started = udpchannel._write_one, []

    def slow(*args):
        started.append(args[2])
        time.sleep(SLOW_WRITE_S)
        return real(*args)

    monkeypatch.setattr(udpchannel, "_write_one", slow)
    data = os.urandom(16 << 20)
    fd = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    async with pair() as (client, server):
        rx = asyncio.ensure_future(server.receive(1, fd, 0, len(data)))
        tx = asyncio.ensure_future(client.send(1, memoryview(data), 0, len(data)))
        while len(started) < 5:  # the data arrives faster than the disk writes it: more writes are queued
            await asyncio.sleep(0.001)
        rx.cancel()
        await asyncio.sleep(SLOW_WRITE_S / 4)  # the receive is draining now
        rx.cancel()
        await asyncio.wait([rx])
        assert rx.cancelled()
        _victim(tmp_path, fd)
        try:
            await asyncio.sleep(10 * SLOW_WRITE_S)  # what a late write would take to arrive
            assert os.fstat(fd).st_size == 0, "a write queued by the cancelled receive landed in the victim"
        finally:
            os.close(fd)
        tx.cancel()
        await asyncio.wait([tx])
    got = (tmp_path / "dst").read_bytes()
    for offset in started:  # every write the receive queued landed in its own file, at its offset
        assert got[offset : offset + 1000] == data[offset : offset + 1000]


@aio
async def test_cancel_and_wait_outlasts_the_callers_own_cancel(tmp_path):
    """Tasks whose cleanup takes several turns of the loop and a thread's write; the caller is cancelled while
    it waits: it still returns only after every cleanup ended, then raises the cancellation."""
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    ended = []

    async def piece(i: int) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # the drain of what it queued
            await asyncio.to_thread(os.pwrite, fd, b"x", i)
            ended.append(i)

    tasks = [asyncio.ensure_future(piece(i)) for i in range(4)]
    await asyncio.sleep(0)
    closer = asyncio.ensure_future(settle.cancel_and_wait(tasks))
    await asyncio.sleep(0.01)
    closer.cancel()
    await asyncio.wait([closer])
    assert closer.cancelled()
    assert sorted(ended) == [0, 1, 2, 3]
    _victim(tmp_path, fd)
    os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"xxxx"


@aio
async def test_a_thread_cancelled_still_finishes_before_the_caller_goes_on(tmp_path):
    """A digest or truncate on a thread cannot be stopped: the caller, cancelled, waits for it to return."""
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)

    def late_write() -> None:
        time.sleep(0.2)
        os.pwrite(fd, b"late", 0)

    work = asyncio.ensure_future(settle.in_thread(late_write))
    await asyncio.sleep(0.02)
    work.cancel()
    await asyncio.wait([work])
    assert work.cancelled()
    _victim(tmp_path, fd)
    try:
        await asyncio.sleep(0.3)
        assert os.fstat(fd).st_size == 0, "the thread's write landed in the victim"
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"late"
