"""The resume sidecar is rewritten as its watermark moves WATERMARK_STEP bytes or WATERMARK_EVERY seconds, not once
per piece: each rewrite is a create and a rename (watched here with inotify, as the kernel reports them), and
once per 512 KiB piece they were the receiving engine's largest cost per byte. What arrives is checked by size
and sha256; a resume after a kill stays exact (tests/engine/test_resume.py)."""

from __future__ import annotations

import ctypes
import os
import struct
import time

import pytest

from fasp.session.receiving import PIECE, WATERMARK_EVERY, WATERMARK_STEP
from tests.engine.helpers import remote
from tests.support.files import assert_same_file, random_file

IN_MOVED_TO, IN_CREATE, IN_CLOSE_WRITE, IN_MODIFY = 0x80, 0x100, 0x8, 0x2
WATCHED = IN_MOVED_TO | IN_CREATE | IN_CLOSE_WRITE | IN_MODIFY
"""More than the renames: inotify merges an event into an identical one still queued, so renames alone would
count as one."""
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; the name follows
_libc = ctypes.CDLL(None, use_errno=True)


def _renames_to(fd: int, name: str) -> int:
    """How many IN_MOVED_TO events queued on ``fd`` name ``name``."""
    count = 0
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return count
        pos = 0
        while pos < len(data):
            _, mask, _, length = _EVENT.unpack_from(data, pos)
            got = data[pos + _EVENT.size : pos + _EVENT.size + length].rstrip(b"\0").decode()
            count += bool(mask & IN_MOVED_TO and got == name)
            pos += _EVENT.size + length


@pytest.mark.timeout(120)
def test_the_sidecar_is_rewritten_by_step_and_time_not_per_piece(fasp_server, tmp_path, spawn):
    server = fasp_server
    size = 64 << 20
    src = random_file(tmp_path / "wm.bin", size)
    fd = _libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0, ctypes.get_errno()
    try:
        assert _libc.inotify_add_watch(fd, str(server.docroot).encode(), WATCHED) >= 0, ctypes.get_errno()
        started = time.monotonic()
        proc = spawn(["-q", "-P", str(server.port), "-l", "1000000", str(src), remote(server, "/wm.bin")], server.env())
        proc.wait(90)
        seconds = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr.read().decode()
        renames = _renames_to(fd, ".wm.bin.fasp-resume")
    finally:
        os.close(fd)
    assert_same_file(src, server.docroot / "wm.bin")
    pieces = size // PIECE
    # the first one as the file starts, then by step or by time (and none as the last piece lands)
    most = 1 + size // WATERMARK_STEP + seconds / WATERMARK_EVERY + 1
    assert 1 <= renames <= most < pieces, (renames, most, pieces, seconds)
