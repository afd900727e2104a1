"""The receiver's write path: a run of adjacent payloads lands with one pwritev (no join), the same bytes as one
pwrite per payload, holes between runs left alone, a short write (a filesystem filling up) is continued
until the kernel names the error, and a small run is written from the loop, a larger one by the writer thread."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from fasp.datapath.udpchannel import INLINE_WRITE, IOV_MAX, _Incoming, _pwrite_all, _Writer

from .conftest import aio


def _payloads(data: bytes, cuts: list[int]) -> list[memoryview]:
    view = memoryview(data)
    edges = [0, *cuts, len(data)]
    return [view[lo:hi] for lo, hi in zip(edges, edges[1:])]


def test_runs_land_as_one_write_per_payload_would(tmp_path):
    data = os.urandom(300_000)
    runs = [(0, [0, 8937, 17874, 20000]), (150_000, [1, 2, 3, 60_000]), (240_000, [])]  # (offset, cuts), gaps
    one, each = tmp_path / "one", tmp_path / "each"
    fd_one, fd_each = os.open(one, os.O_RDWR | os.O_CREAT), os.open(each, os.O_RDWR | os.O_CREAT)
    try:
        for (offset, cuts), end in zip(runs, [100_000, 210_000, 300_000]):
            payloads = _payloads(data[offset:end], cuts)
            _pwrite_all(fd_one, payloads, offset)
            at = offset
            for payload in payloads:
                os.pwrite(fd_each, payload, at)
                at += len(payload)
    finally:
        os.close(fd_one)
        os.close(fd_each)
    got = one.read_bytes()
    assert got == each.read_bytes()
    assert got[100_000:150_000] == bytes(50_000) and got[210_000:240_000] == bytes(30_000)  # the holes stay holes
    assert got[:100_000] == data[:100_000] and got[240_000:] == data[240_000:]


def test_more_payloads_than_one_pwritev_takes(tmp_path):
    data = os.urandom(3 * IOV_MAX + 5)
    payloads = _payloads(data, list(range(1, len(data))))  # one byte each
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        _pwrite_all(fd, payloads, 7)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == bytes(7) + data


def test_a_short_write_is_continued_until_the_error(tmp_path):
    """RLIMIT_FSIZE makes the kernel write up to the limit (short), then refuse (EFBIG): the bytes up to the
    limit are there, and the error is the kernel's, not a silent loss of the rest."""
    script = f"""
import os, resource, signal, sys
sys.path.insert(0, {os.getcwd()!r})
from fasp.datapath.udpchannel import _pwrite_all
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
data = bytes(range(256)) * 1000
view = memoryview(data)
fd = os.open({str(tmp_path / "f")!r}, os.O_RDWR | os.O_CREAT)
try:
    _pwrite_all(fd, [view[:30_000], view[30_000:90_000], view[90_000:]], 0)
except OSError as exc:
    print(exc.errno)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(27), out  # EFBIG
    assert (tmp_path / "f").read_bytes() == (bytes(range(256)) * 1000)[:100_000]


@aio
async def test_a_small_run_is_written_before_submit_returns_a_larger_one_by_the_thread(tmp_path):
    """Where datagrams arrive one by one (no GRO) each socket read brings a small run, and handing it to the
    writer thread (a wake-up there, one back to the loop) cost more than the copy it overlaps."""
    loop = asyncio.get_running_loop()
    reported: list[tuple[int, OSError | None]] = []

    def on_done(results):
        for inc, new, error in results:
            inc.pending -= 1
            reported.append((new, error))

    writer = _Writer(loop, on_done)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        inc = _Incoming(1, fd, None, loop.create_future())
        small, large = os.urandom(INLINE_WRITE), os.urandom(INLINE_WRITE + 1)
        writer.submit(inc, [memoryview(small)[:1000], memoryview(small)[1000:]], 0, len(small))
        assert reported == [(len(small), None)] and inc.pending == 0  # written and reported already
        assert os.pread(fd, len(small), 0) == small
        writer.submit(inc, large, len(small), len(large))
        assert inc.pending == 1  # the thread has it
        while inc.pending:
            await asyncio.sleep(0.01)
        assert reported == [(len(small), None), (len(large), None)]
        assert os.pread(fd, len(small) + len(large), 0) == small + large
        read_only = os.open(tmp_path / "f", os.O_RDONLY)
        try:  # a small write the kernel refuses: its error, reported at once
            refused = _Incoming(2, read_only, None, loop.create_future())
            writer.submit(refused, b"x", 0, 1)
        finally:
            os.close(read_only)
        assert reported[-1][0] == 1 and isinstance(reported[-1][1], OSError) and refused.pending == 0
    finally:
        writer.close()
        os.close(fd)
