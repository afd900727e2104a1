"""Datagram codec of the engine's UDP data channel (sans-IO: bytes in, values out).

Every datagram is ``header || sealed body``. The header travels in clear (it is the AEAD's associated data,
so it is authenticated, not hidden):

    flags u8 (version 3 bits | type 4 bits | direction 1 bit) | connection id 2s | seq u32
    [ ts u32 | echo u32 ]   every type but DATA

Wire version 3 spends 17 bytes on a DATA datagram's header and data head (version 1 spent 52, 2 spent 21), so
at a 1,500-byte MTU (1,472-byte UDP payload) 1,439 of the 1,500 bytes on the link are file bytes (95.9 %):

- the connection id is the session id's first two bytes. It only turns away stray datagrams (an earlier
  session's, on a reused port) before they cost a decryption; the session is bound by the key, which both
  ends derive from their two shares salted with the whole session id, so a forged or foreign datagram
  fails authentication whatever its id says;
- ``seq`` is the low 32 bits of the sender's datagram count. The opener reconstructs the full 64-bit number
  as the one nearest the highest it accepted (QUIC's rule), and the nonce and the replay window use the
  full number, so no nonce repeats when the low bits wrap;
- ``ts`` is the sender's clock (microseconds, wrapping) and ``echo`` the peer's latest ``ts`` advanced by how
  long it was held, so ``now - echo`` is a round-trip sample without synchronised clocks. Only control
  datagrams carry them: DATA is dated by its ``seq`` instead, which the sender maps to the time it sent it.
  The receiver's feedback names the newest DATA it processed by ``seq`` and how long ago (``data_age``): the
  sender dates the holes and takes a round-trip sample from it. A ``ts`` in every DATA cost 4 bytes of each
  datagram, 24 of an 8 KiB file's 6 (version 2);
- a DATA body is ``file_id u32 | offset u48 | payload``: the payload's length is what the datagram holds,
  and 48 bits address 256 TiB per file.

Bodies are defined per type below; all integers are big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VERSION = 3
HEADER = struct.Struct("!B2sI")  # flags, connection id, seq (low 32 bits): every datagram
CLOCKS = struct.Struct("!II")  # ts, echo: follow the header in every datagram but DATA
HEADER_TAIL = struct.Struct("!I")  # seq (low 32 bits): what changes from one DATA datagram to the next
CONTROL_TAIL = struct.Struct("!III")  # seq, ts, echo: the same for the other types
HEADER_SIZE = HEADER.size  # a DATA datagram's header
CONTROL_HEADER_SIZE = HEADER_SIZE + CLOCKS.size  # any other type's
CID_SIZE = 2
TAG_SIZE = 16  # AES-GCM tag; present with and without encryption (GMAC when -T)
SEQ_BITS = 32

HELLO, HELLO_ACK, DATA, FEEDBACK, CLOSE, PROBE, PROBE_ACK = 1, 2, 3, 4, 5, 6, 7
TYPES = frozenset({HELLO, HELLO_ACK, DATA, FEEDBACK, CLOSE, PROBE, PROBE_ACK})

DATA_HEAD = struct.Struct("!IHI")  # file_id, offset (high 16 bits, low 32 bits); the payload follows
DATA_OVERHEAD = HEADER_SIZE + DATA_HEAD.size + TAG_SIZE
IP_UDP_HEADERS = 28  # IPv4 and UDP headers: what the link carries beyond a datagram (a path MTU counts them)
WIRE_OVERHEAD = DATA_OVERHEAD + IP_UDP_HEADERS  # a DATA datagram's link bytes beyond its payload: the rate counts
# them, as a link's rate does (counting the UDP payload alone, FIXED at a 100 Mbit/s link's rate offered 1.9 % more
# than the link carries: its queue stood full and dropped what a busy host's bursts added)
MAX_OFFSET = 1 << 48  # a DATA datagram's bytes end at most here

_HELLO = struct.Struct("!I")  # the sender's datagram size (informative)
_CLOSE = struct.Struct("!H")  # ascp error code, 0 = normal end
_PROBE_ACK = struct.Struct("!I")  # the size of the PROBE datagram that arrived
_FB_HEAD = struct.Struct("!IHHII")  # recv_rate_kbps, loss (x/65535), number of file reports, data_seq, data_age
_FB_FILE = struct.Struct("!IBQH")  # file_id, flags, recv_high, number of holes
_FB_HOLE = struct.Struct("!QQ")
_FB_COMPLETE = 1
MAX_U32 = 0xFFFFFFFF

Buffer = bytes | bytearray | memoryview  # what the codec reads: a received datagram, or a view into one


class WireError(ValueError):
    """A datagram that does not parse: the driver drops and counts it."""


def header_size(type_: int) -> int:
    return HEADER_SIZE if type_ == DATA else CONTROL_HEADER_SIZE


def header_prefix(type_: int, direction: int, cid: bytes) -> bytes:
    """The constant first part of a header; ``+ HEADER_TAIL.pack(seq, ts)`` (and the echo) completes it."""
    return bytes([VERSION << 5 | type_ << 1 | direction]) + cid


def pack_header(type_: int, direction: int, cid: bytes, seq: int, ts: int, echo: int) -> bytes:
    """A header (``seq`` truncated to its low 32 bits; ``ts`` and ``echo`` dropped for DATA)."""
    tail = (
        HEADER_TAIL.pack(seq & MAX_U32)
        if type_ == DATA
        else CONTROL_TAIL.pack(seq & MAX_U32, ts & MAX_U32, echo & MAX_U32)
    )
    return header_prefix(type_, direction, cid) + tail


def kind(datagram: Buffer) -> int:
    """The type a datagram's first byte names (whatever it is: for observers such as a test's relay)."""
    return datagram[0] >> 1 & 0xF if datagram else 0


def parse_header(datagram: Buffer) -> tuple[int, int, bytes, int, int, int]:
    """(type, direction, connection id, seq's low 32 bits, ts, echo (both 0 for DATA)) of a datagram long
    enough to hold its header and a tag."""
    if len(datagram) < HEADER_SIZE + TAG_SIZE:
        raise WireError("datagram too short")
    flags, cid, seq = HEADER.unpack_from(datagram)
    version, type_, direction = flags >> 5, flags >> 1 & 0xF, flags & 1
    if version != VERSION or type_ not in TYPES:
        raise WireError(f"unknown version {version} or type {type_}")
    if type_ == DATA:
        return type_, direction, cid, seq, 0, 0
    if len(datagram) < CONTROL_HEADER_SIZE + TAG_SIZE:
        raise WireError("control datagram too short")
    return type_, direction, cid, seq, *CLOCKS.unpack_from(datagram, HEADER_SIZE)


def full_seq(low: int, expected: int) -> int:
    """The 64-bit sequence number whose low 32 bits are ``low``, nearest ``expected`` (QUIC's rule)."""
    window = 1 << SEQ_BITS
    candidate = (expected & ~(window - 1)) | low
    if candidate <= expected - window // 2 and candidate < (1 << 64) - window:
        return candidate + window
    if candidate > expected + window // 2 and candidate >= window:
        return candidate - window
    return candidate


def data_head(file_id: int, offset: int) -> bytes:
    """The head of a DATA body: the one place DATA framing is spelled (its payload follows)."""
    return DATA_HEAD.pack(file_id, offset >> 32, offset & MAX_U32)


def pack_data(file_id: int, offset: int, payload: Buffer) -> bytes:
    return data_head(file_id, offset) + payload


def parse_data(body: Buffer) -> tuple[int, int, memoryview]:
    """(file_id, offset, payload) of a DATA body."""
    if len(body) < DATA_HEAD.size:
        raise WireError("DATA body too short")
    file_id, high, low = DATA_HEAD.unpack_from(body)
    offset = high << 32 | low
    if offset + len(body) - DATA_HEAD.size > MAX_OFFSET:
        raise WireError("DATA beyond the largest offset")
    return file_id, offset, memoryview(body)[DATA_HEAD.size :]


def pack_probe(size: int) -> bytes:
    """A PROBE body padding its datagram to ``size`` bytes (zeros: sealed like any body)."""
    return bytes(size - CONTROL_HEADER_SIZE - TAG_SIZE)


def pack_probe_ack(size: int) -> bytes:
    return _PROBE_ACK.pack(size)


def parse_probe_ack(body: Buffer) -> int:
    if len(body) != _PROBE_ACK.size:
        raise WireError("bad PROBE_ACK body")
    size: int = _PROBE_ACK.unpack(body)[0]
    return size


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
    """The receiver's periodic report: its receive rate, the loss it measured, per-file state, and the newest
    DATA it had processed: its ``seq``'s low 32 bits and how long before the report it arrived (microseconds;
    0 and 0: none yet). The sender knows when it sent that seq: that dates the holes and gives an RTT sample."""

    recv_rate_kbps: int
    loss: float
    files: list[FileReport] = field(default_factory=list)
    data_seq: int = 0
    data_age: int = 0


FEEDBACK_HEAD_SIZE, FILE_REPORT_SIZE, HOLE_SIZE = _FB_HEAD.size, _FB_FILE.size, _FB_HOLE.size


def pack_feedback(fb: Feedback) -> bytes:
    loss = min(65535, max(0, round(fb.loss * 65535)))
    head = (min(fb.recv_rate_kbps, MAX_U32), loss, len(fb.files), fb.data_seq & MAX_U32, min(fb.data_age, MAX_U32))
    parts = [_FB_HEAD.pack(*head)]
    for f in fb.files:
        parts.append(_FB_FILE.pack(f.file_id, _FB_COMPLETE if f.complete else 0, f.recv_high, len(f.holes)))
        parts.extend(_FB_HOLE.pack(a, b) for a, b in f.holes)
    return b"".join(parts)


def parse_feedback(body: Buffer) -> Feedback:
    try:
        rate, loss, n_files, data_seq, data_age = _FB_HEAD.unpack_from(body)
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
    return Feedback(rate, loss / 65535, files, data_seq, data_age)
