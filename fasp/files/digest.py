"""File digests: the checksum reported per file, and the prefix digests resume compares.

Both ends compute the same prefix digest over their own copy, so only a short
hex string crosses the control channel, never file bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

BLOCK = 1 << 20
SAMPLE = 64 * 1024
SAMPLES = 32


def file_checksum(fd: int, size: int, algorithm: str) -> str:
    """Hex digest of bytes [0, size) of an open file (``--file-checksum``)."""
    hasher = hashlib.new(algorithm)
    offset = 0
    while offset < size:
        block = os.pread(fd, min(BLOCK, size - offset), offset)
        if not block:
            break
        hasher.update(block)
        offset += len(block)
    return hasher.hexdigest()


def prefix_digest(read: Callable[[int, int], bytes], length: int, sparse: bool) -> str:
    """Digest of bytes [0, length) as ``read(n, offset)`` gives them: all of them (``-k 3``), or evenly
    spaced samples (``-k 2``). The sparse form always includes the last SAMPLE bytes before ``length``,
    where an interrupted write is most likely to have left a hole."""
    hasher = hashlib.sha256(length.to_bytes(8, "big"))
    offsets: Sequence[int]
    if not sparse or length <= SAMPLES * SAMPLE:
        offsets = range(0, length, BLOCK)
        span = BLOCK
    else:
        step = length // SAMPLES
        offsets = [i * step for i in range(SAMPLES)] + [length - SAMPLE]
        span = SAMPLE
    for offset in offsets:
        want = min(span, length - offset)
        hasher.update(read(want, offset).ljust(want, b"\0"))
    return hasher.hexdigest()


def reader(fd: int) -> Callable[[int, int], bytes]:
    """``read(n, offset)`` over an open file, for :func:`prefix_digest`."""
    return lambda n, offset: os.pread(fd, n, offset)
