"""The HTTP fallback's wire forms (sans-IO): the request that opens the channel, then framed bytes.

When UDP cannot pass (``-y 1``), the data channel becomes one TCP stream to the
server's fallback port (through ``CONNECT`` on an HTTP proxy with ``-x``, inside
TLS with ``-I``). It opens with an HTTP/1.1 upgrade, so proxies and
middleboxes see ordinary HTTP::

    POST /fasp/v1/session/<session id, 32 hex> HTTP/1.1
    Host: <host>:<port>
    Connection: Upgrade
    Upgrade: fasp-stream/1
    Content-Type: application/octet-stream | image/jpeg
    X-Fasp-Token: <one-time token the server engine gave over SSH>

answered ``HTTP/1.1 101 Switching Protocols`` (or a 4xx/5xx with a reason). From
then on both ways carry frames, each holding one sealed datagram
(:mod:`fasp.datapath.datagram` + :mod:`fasp.datapath.seal`), so the data stays encrypted and
authenticated end to end whatever carries it. A plain frame is a 4-byte
big-endian length then the bytes. With ``-j 1`` a frame is a JPEG image that
decoders accept: a real 1x1 grey JPEG whose comment (COM) segments, inserted
after its JFIF header, carry the bytes in order.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from faspmanager.codes import EngineError, ErrorCode

MAX_HEAD = 8192
"""Largest request or response head we read: anything longer is not ours."""
MAX_FRAME = 1 << 20
"""Largest frame body: a sealed datagram of one chunk (:mod:`fasp.datapath.httpchannel` sends at most 64 KiB)."""
UPGRADE = "fasp-stream/1"
PATH_PREFIX = "/fasp/v1/session/"
TOKEN_HEADER = "x-fasp-token"
JPEG_TYPE = "image/jpeg"
PLAIN_TYPE = "application/octet-stream"

_LEN = struct.Struct(">I")
_SEG = struct.Struct(">H")
_SESSION = re.compile(r"[0-9a-f]{32}\Z")
# a 1x1 grey baseline JPEG (what PIL writes at quality 50): SOI + JFIF APP0, then the rest of the image
_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a181616183123251d283a"
    "333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c656763ffc0000b080001000101011100ffc4"
    "001f0000010501010101010100000000000000000102030405060708090a0bffc400b5100002010303020403050504040000017d"
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435"
    "363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798"
    "999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4"
    "f5f6f7f8f9faffda0008010100003f002bffd9"
)
JPEG_HEAD, JPEG_TAIL = _JPEG[:20], _JPEG[20:]  # SOI + APP0 | DQT SOF0 DHT DHT SOS scan EOI
_COM = b"\xff\xfe"
_COM_MAX = 0xFFFF - _SEG.size  # bytes one COM segment carries


class HttpWireError(EngineError):
    """Bytes that are not our HTTP fallback protocol (code 47): the channel cannot go on."""

    def __init__(self, description: str):
        super().__init__(ErrorCode.CONNECTION_ERROR_HTTP, description)


# ---- the opening exchange --------------------------------------------------------------------------


@dataclass
class Head:
    """A parsed request or response head: the start line's parts and lower-cased headers."""

    start: tuple[str, str, str]
    headers: dict[str, str]


def request(session_id: str, token: str, host: str, port: int, jpeg: bool) -> bytes:
    """The upgrade request that opens the fallback channel of ``session_id``."""
    return (
        f"POST {PATH_PREFIX}{session_id} HTTP/1.1\r\nHost: {_authority(host, port)}\r\n"
        f"Connection: Upgrade\r\nUpgrade: {UPGRADE}\r\n"
        f"Content-Type: {JPEG_TYPE if jpeg else PLAIN_TYPE}\r\nX-Fasp-Token: {token}\r\n\r\n"
    ).encode()


def response(status: int, reason: str, content_type: str = PLAIN_TYPE) -> bytes:
    """101 with the upgrade headers, or an error with ``reason`` as a short text body."""
    if status == 101:
        return (
            f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE}\r\n"
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
    body = (reason + "\n").encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode() + body


def connect_request(host: str, port: int) -> bytes:
    """What an HTTP proxy needs to open a tunnel to the fallback port."""
    authority = _authority(host, port)
    return f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_head(buffer: bytes) -> tuple[bytes, bytes] | None:
    """(head, bytes after it) once ``buffer`` holds a whole head, None while it may still come."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise HttpWireError(f"HTTP head longer than {MAX_HEAD} bytes")
        return None
    if end + 4 > MAX_HEAD:
        raise HttpWireError(f"HTTP head longer than {MAX_HEAD} bytes")
    return buffer[: end + 4], buffer[end + 4 :]


def parse_head(head: bytes) -> Head:
    """Start line and headers of a head from :func:`split_head`; HttpWireError if malformed."""
    try:
        lines = head.decode("ascii").split("\r\n")
    except UnicodeDecodeError:
        raise HttpWireError("HTTP head is not ASCII") from None
    parts = lines[0].split(" ", 2)
    if len(parts) != 3:
        raise HttpWireError(f"malformed HTTP start line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpWireError(f"malformed HTTP header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return Head((parts[0], parts[1], parts[2]), headers)


def check_request(head: Head) -> tuple[str, str, bool]:
    """(session id, token, jpeg) of an upgrade request; HttpWireError naming what is wrong."""
    method, target, version = head.start
    if method != "POST" or version != "HTTP/1.1" or not target.startswith(PATH_PREFIX):
        raise HttpWireError(f"not a fallback request: {method} {target[:80]}")
    session_id = target[len(PATH_PREFIX) :]
    if not _SESSION.match(session_id):
        raise HttpWireError("malformed session id in the request path")
    if head.headers.get("upgrade") != UPGRADE:
        raise HttpWireError(f"request does not upgrade to {UPGRADE}")
    token = head.headers.get(TOKEN_HEADER)
    if not token:
        raise HttpWireError("request carries no session token")
    return session_id, token, head.headers.get("content-type") == JPEG_TYPE


def status_of(head: Head) -> int:
    """The status code of a response head."""
    version, code, _ = head.start
    if not version.startswith("HTTP/1.") or not code.isdigit() or len(code) != 3:
        raise HttpWireError(f"malformed HTTP status line {' '.join(head.start)[:80]!r}")
    return int(code)


# ---- frames ----------------------------------------------------------------------------------------


def encode_frame(payload: bytes, jpeg: bool) -> bytes:
    """One frame carrying ``payload`` (1 to MAX_FRAME bytes)."""
    if not 0 < len(payload) <= MAX_FRAME:
        raise HttpWireError(f"frame payload of {len(payload)} bytes out of range")
    if not jpeg:
        return _LEN.pack(len(payload)) + payload
    parts: list[bytes | memoryview] = [JPEG_HEAD]
    view = memoryview(payload)
    for pos in range(0, len(view), _COM_MAX):
        piece = view[pos : pos + _COM_MAX]
        parts += [_COM, _SEG.pack(len(piece) + _SEG.size), piece]
    parts.append(JPEG_TAIL)
    return b"".join(parts)


class FrameDecoder:
    """Incremental: feed any slices of the stream, get whole payloads back.

    After an error the stream is out of sync; every later feed raises again."""

    def __init__(self, jpeg: bool) -> None:
        self._jpeg = jpeg
        self._buf = bytearray()
        self._error: HttpWireError | None = None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back (non-zero at EOF means a truncated stream)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[bytes] = []
        try:
            while True:
                frame = self._jpeg_frame() if self._jpeg else self._plain_frame()
                if frame is None:
                    return out
                out.append(frame)
        except HttpWireError as exc:
            self._error = exc
            raise

    def _plain_frame(self) -> bytes | None:
        buf = self._buf
        if len(buf) < _LEN.size:
            return None
        (length,) = _LEN.unpack_from(buf)
        if not 0 < length <= MAX_FRAME:
            raise HttpWireError(f"frame length {length} out of range")
        if len(buf) < _LEN.size + length:
            return None
        frame = bytes(buf[_LEN.size : _LEN.size + length])
        del buf[: _LEN.size + length]
        return frame

    def _jpeg_frame(self) -> bytes | None:
        buf = self._buf
        head = bytes(buf[: len(JPEG_HEAD)])
        if head != JPEG_HEAD[: len(head)]:
            raise HttpWireError("frame is not a JPEG image of ours")
        pos, pieces, size = len(JPEG_HEAD), [], 0
        while True:
            if len(buf) < pos + 2:
                return None
            if buf[pos : pos + 2] != _COM:
                break
            if len(buf) < pos + 4:
                return None
            (length,) = _SEG.unpack_from(buf, pos + 2)
            if length <= _SEG.size:
                raise HttpWireError("empty COM segment")
            size += length - _SEG.size
            if size > MAX_FRAME:
                raise HttpWireError(f"JPEG frame carries more than {MAX_FRAME} bytes")
            if len(buf) < pos + 2 + length:
                return None
            pieces.append((pos + 4, pos + 2 + length))
            pos += 2 + length
        tail = bytes(buf[pos : pos + len(JPEG_TAIL)])
        if tail != JPEG_TAIL[: len(tail)]:
            raise HttpWireError("JPEG frame does not end as ours")
        if len(tail) < len(JPEG_TAIL):
            return None
        if not pieces:
            raise HttpWireError("JPEG frame carries no bytes")
        frame = b"".join(bytes(buf[a:b]) for a, b in pieces)
        del buf[: pos + len(JPEG_TAIL)]
        return frame
