"""Datagram codec of the engine's UDP data channel (sans-IO: bytes in, values out).

Every datagram is ``header || sealed body``. The header travels in clear (it is
the AEAD's associated data, so it is authenticated, not hidden):

    version u8 | type u8 | direction u8 | reserved u8 | session_id 16s |
    seq u64 | ts u32 | echo u32

``seq`` counts the datagrams one direction has sent: with ``direction`` it is
the AEAD nonce, and the peer's replay window. ``ts`` is the sender's clock
(microseconds, wrapping) and ``echo`` the peer's latest ``ts`` advanced by how
long it was held, so ``now - echo`` is a round-trip sample without synchronised
clocks. Bodies are defined per type below; all integers are big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VERSION = 1
HEADER = struct.Struct("!BBBB16sQII")
HEADER_SIZE = HEADER.size
_HEADER_PREFIX = struct.Struct("!BBBB16s")
HEADER_TAIL = struct.Struct("!QII")  # seq, ts, echo: what changes from one datagram to the next
TAG_SIZE = 16  # AES-GCM tag; present with and without encryption (GMAC when -T)

HELLO, HELLO_ACK, DATA, FEEDBACK, CLOSE = 1, 2, 3, 4, 5
TYPES = frozenset({HELLO, HELLO_ACK, DATA, FEEDBACK, CLOSE})

DATA_HEAD = struct.Struct("!IQI")  # file_id, offset, length; the payload follows
DATA_OVERHEAD = HEADER_SIZE + DATA_HEAD.size + TAG_SIZE

_HELLO = struct.Struct("!I")  # the sender's datagram size (informative)
_CLOSE = struct.Struct("!H")  # ascp error code, 0 = normal end
_FB_HEAD = struct.Struct("!IHHI")  # recv_rate_kbps, loss (x/65535), number of file reports, data_ts
_FB_FILE = struct.Struct("!IBQH")  # file_id, flags, recv_high, number of holes
_FB_HOLE = struct.Struct("!QQ")
_FB_COMPLETE = 1
MAX_U32 = 0xFFFFFFFF

Buffer = bytes | bytearray | memoryview  # what the codec reads: a received datagram, or a view into one


class WireError(ValueError):
    """A datagram that does not parse: the driver drops and counts it."""


def pack_header(type_: int, direction: int, session_id: bytes, seq: int, ts: int, echo: int) -> bytes:
    return HEADER.pack(VERSION, type_, direction, 0, session_id, seq, ts & MAX_U32, echo & MAX_U32)


def header_prefix(type_: int, direction: int, session_id: bytes) -> bytes:
    """The constant first part of a header; ``+ HEADER_TAIL.pack(seq, ts, echo)`` completes it."""
    return _HEADER_PREFIX.pack(VERSION, type_, direction, 0, session_id)


def parse_header(datagram: Buffer) -> tuple[int, int, bytes, int, int, int]:
    """(type, direction, session_id, seq, ts, echo) of a datagram long enough to hold a header and a tag."""
    if len(datagram) < HEADER_SIZE + TAG_SIZE:
        raise WireError("datagram too short")
    version, type_, direction, _, sid, seq, ts, echo = HEADER.unpack_from(datagram)
    if version != VERSION or type_ not in TYPES or direction > 1:
        raise WireError(f"unknown version {version}, type {type_} or direction {direction}")
    return type_, direction, sid, seq, ts, echo


def pack_data(file_id: int, offset: int, payload: Buffer) -> bytes:
    return DATA_HEAD.pack(file_id, offset, len(payload)) + payload


def parse_data(body: Buffer) -> tuple[int, int, memoryview]:
    """(file_id, offset, payload) of a DATA body."""
    if len(body) < DATA_HEAD.size:
        raise WireError("DATA body too short")
    file_id, offset, length = DATA_HEAD.unpack_from(body)
    if length != len(body) - DATA_HEAD.size:
        raise WireError("DATA length mismatch")
    return file_id, offset, memoryview(body)[DATA_HEAD.size :]


def pack_hello(datagram_size: int) -> bytes:
    return _HELLO.pack(datagram_size)


def parse_hello(body: Buffer) -> int:
    if len(body) != _HELLO.size:
        raise WireError("bad HELLO body")
    size: int = _HELLO.unpack(body)[0]
    return size


def pack_close(code: int) -> bytes:
    return _CLOSE.pack(code)


def parse_close(body: Buffer) -> int:
    if len(body) != _CLOSE.size:
        raise WireError("bad CLOSE body")
    code: int = _CLOSE.unpack(body)[0]
    return code


@dataclass
class FileReport:
    """What the receiver knows of one file: the highest byte seen, the holes below it, completion."""

    file_id: int
    recv_high: int
    holes: list[tuple[int, int]] = field(default_factory=list)
    complete: bool = False


@dataclass
class Feedback:
    """The receiver's periodic report: its receive rate, the loss it measured, per-file state, and the
    send timestamp (``ts``) of the newest DATA it had processed (0: none), which dates the holes."""

    recv_rate_kbps: int
    loss: float
    files: list[FileReport] = field(default_factory=list)
    data_ts: int = 0


FEEDBACK_HEAD_SIZE, FILE_REPORT_SIZE, HOLE_SIZE = _FB_HEAD.size, _FB_FILE.size, _FB_HOLE.size


def pack_feedback(fb: Feedback) -> bytes:
    loss = min(65535, max(0, round(fb.loss * 65535)))
    parts = [_FB_HEAD.pack(min(fb.recv_rate_kbps, MAX_U32), loss, len(fb.files), fb.data_ts & MAX_U32)]
    for f in fb.files:
        parts.append(_FB_FILE.pack(f.file_id, _FB_COMPLETE if f.complete else 0, f.recv_high, len(f.holes)))
        parts.extend(_FB_HOLE.pack(a, b) for a, b in f.holes)
    return b"".join(parts)


def parse_feedback(body: Buffer) -> Feedback:
    try:
        rate, loss, n_files, data_ts = _FB_HEAD.unpack_from(body)
        pos = _FB_HEAD.size
        files = []
        for _ in range(n_files):
            file_id, flags, recv_high, n_holes = _FB_FILE.unpack_from(body, pos)
            pos += _FB_FILE.size
            holes = []
            for _ in range(n_holes):
                a, b = _FB_HOLE.unpack_from(body, pos)
                pos += _FB_HOLE.size
                if not a < b <= recv_high:
                    raise WireError("bad hole")
                holes.append((a, b))
            files.append(FileReport(file_id, recv_high, holes, bool(flags & _FB_COMPLETE)))
    except struct.error as exc:
        raise WireError(f"truncated FEEDBACK: {exc}") from None
    if pos != len(body):
        raise WireError("trailing bytes in FEEDBACK")
    return Feedback(rate, loss / 65535, files, data_ts)
