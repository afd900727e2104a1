"""The receiver's write path: a run of adjacent payloads lands with one pwritev (no join), the same bytes as one
pwrite per payload, holes between runs left alone, and a short write (a filesystem filling up) is continued
until the kernel names the error."""

from __future__ import annotations

import os
import subprocess
import sys

from fasp.datapath.udpchannel import IOV_MAX, _pwrite_all


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
