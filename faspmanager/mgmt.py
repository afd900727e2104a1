"""The FASPMGR 2 management-port codec, shared by the library and the engine.

Sans-IO: :func:`encode` turns a frame into bytes, :class:`Decoder` turns a byte
stream into :class:`Frame` objects. Neither touches a socket, so both sides of
the port (faspmanager and fasp-ascp) speak exactly the same dialect and the
codec can be fuzzed on its own.

Wire form::

    FASPMGR 2\\n
    Type: STATS\\n
    Name: value\\n
    \\n
    [exactly Size raw bytes, WRITE frames only]

Values holding a control character (a file may be named ``a\\nb``): IBM's
protocol has no escape (its parsers split on newlines), so a sender that may
meet such values calls ``encode(..., escape=True)``: each such value travels
percent-encoded (UTF-8; its control characters, line/paragraph separators,
undecodable bytes and ``%`` itself as ``%XX``) and the frame names those
fields in ``EscapedFields: File,Description``. Plain values travel verbatim,
so an IBM parser sees every ordinary frame unchanged (and a single readable
line for an escaped one, ignoring the unknown field); :class:`Decoder` undoes
the escape, so ``Frame.fields`` always hold the original text.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import unquote

HEADER = "FASPMGR 2"
MAX_HEADER_BYTES = 64 * 1024
"""A frame's text part may not exceed this: garbage can never grow the buffer without limit."""
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
"""Largest WRITE payload a decoder accepts (a chunk, not a file)."""

_FORBIDDEN = ("\r", "\n", "\0")
SECRET_ENV = "FASPMANAGER_MGMT_SECRET"
"""The environment variable through which a manager hands its program the session's secret (never argv)."""
AUTH_FRAME = "AUTH"
"""The first frame a program that got a secret sends (``Secret: ...``), before any event: the manager admits
only the connection that presents it. A program without the variable (IBM's ascp) never sends it."""
ESCAPED_FIELDS = "EscapedFields"
"""The field naming the fields of a frame whose values are percent-encoded."""


def _unsafe(char: str) -> bool:
    """A character that cannot travel verbatim: controls, line separators, undecodable bytes (surrogates)."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs")


def needs_escape(text: str) -> bool:
    # printable text (the usual case, checked in C) holds none of the unsafe categories
    return not text.isprintable() and any(_unsafe(c) for c in text)


def escape_value(text: str) -> str:
    """Percent-encode the unsafe characters of ``text`` and ``%``; everything else stays readable.

    A surrogate stands for an undecodable byte of a file name (``os.fsdecode``); one that does not cannot be
    sent at all."""
    try:
        return "".join(
            "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape")) if c == "%" or _unsafe(c) else c
            for c in text
        )
    except UnicodeEncodeError:
        raise MgmtProtocolError(f"{text!r} holds a surrogate that stands for no byte") from None


def unescape_value(text: str) -> str:
    return unquote(text, encoding="utf-8", errors="surrogateescape")


class MgmtProtocolError(ValueError):
    """Malformed management-port traffic, or a frame that cannot be encoded."""


@dataclass
class Frame:
    """One management message: its ``Type``, its other fields as text, and WRITE's raw bytes."""

    type: str
    fields: dict[str, str] = field(default_factory=dict)
    payload: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.fields.get(name, default)

    def int(self, name: str, default: int | None = None) -> int | None:
        raw = self.fields.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return int(raw.strip())
        except ValueError:
            raise MgmtProtocolError(f"{self.type} field {name!r} is not an integer: {raw!r}") from None

    def float(self, name: str, default: float | None = None) -> float | None:
        raw = self.fields.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return float(raw.strip())
        except ValueError:
            raise MgmtProtocolError(f"{self.type} field {name!r} is not a number: {raw!r}") from None

    def bool(self, name: str, default: bool | None = None) -> bool | None:
        raw = self.fields.get(name)
        if raw is None or raw.strip() == "":
            return default
        word = raw.strip().lower()
        if word in ("yes", "true", "1"):
            return True
        if word in ("no", "false", "0"):
            return False
        raise MgmtProtocolError(f"{self.type} field {name!r} is not Yes/No: {raw!r}")

    def encode(self) -> bytes:
        return encode(self.type, self.fields, self.payload)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    raise MgmtProtocolError(f"cannot encode a {type(value).__name__} as a field value")


def _check(kind: str, text: str) -> None:
    for bad in _FORBIDDEN:
        if bad in text:
            raise MgmtProtocolError(f"{kind} {text!r} contains {bad!r}; it cannot travel in a frame")
    if not text.isprintable() and any(unicodedata.category(c) == "Cs" for c in text):
        raise MgmtProtocolError(f"{kind} {text!r} is not valid UTF-8; it cannot travel in a frame")


def encode(frame_type: str, fields: Mapping[str, object] = {}, payload: bytes = b"", *, escape: bool = False) -> bytes:
    """One frame as bytes. None values are left out; WRITE gets ``Size`` and its payload.

    With ``escape``, values holding control characters are percent-encoded (see the module doc) instead
    of refused: only for a reader known to undo it (our engine, our library); IBM's ascp would take the
    escaped text literally.
    """
    _check("frame type", frame_type)
    if not frame_type or frame_type != frame_type.strip() or ":" in frame_type:
        raise MgmtProtocolError(f"invalid frame type {frame_type!r}")
    lines = [HEADER, f"Type: {frame_type}"]
    escaped = []
    for name, value in fields.items():
        if value is None:
            continue
        _check("field name", name)
        if not name or name != name.strip() or ":" in name or name == "Type":
            raise MgmtProtocolError(f"invalid field name {name!r}")
        if frame_type == "WRITE" and name == "Size":
            raise MgmtProtocolError("WRITE's Size is set from the payload, do not pass it")
        if name == ESCAPED_FIELDS:
            raise MgmtProtocolError(f"{ESCAPED_FIELDS} is set by the codec, do not pass it")
        text = _text(value)
        if escape and needs_escape(text):
            text = escape_value(text)
            if "," in name:
                raise MgmtProtocolError(f"field name {name!r} holds ',': it cannot be listed in {ESCAPED_FIELDS}")
            escaped.append(name)
        _check(f"value of {name}", text)
        lines.append(f"{name}: {text}")
    if escaped:
        lines.append(f"{ESCAPED_FIELDS}: {','.join(escaped)}")
    if frame_type == "WRITE":
        lines.append(f"Size: {len(payload)}")
    elif payload:
        raise MgmtProtocolError(f"only WRITE frames carry a payload, not {frame_type}")
    head = ("\n".join(lines) + "\n\n").encode("utf-8")
    if len(head) > MAX_HEADER_BYTES:
        raise MgmtProtocolError(f"{frame_type} frame header exceeds {MAX_HEADER_BYTES} bytes")
    return head + bytes(payload)


class Decoder:
    """Incremental decoder: feed any slices of the stream, get complete frames back.

    After a :class:`MgmtProtocolError` the stream is out of sync for good; every
    later ``feed`` raises again rather than guessing where the next frame starts.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed bytes in _buf (compacted once per feed)
        self._scan = 0  # bytes after _pos already known to hold no newline
        self._in_frame = False  # header line seen, fields pending
        self._header_bytes = 0
        self._type: str | None = None
        self._fields: dict[str, str] = {}
        self._payload_frame: Frame | None = None
        self._payload_size = 0
        self._error: MgmtProtocolError | None = None

    def feed(self, data: bytes) -> list[Frame]:
        if self._error is not None:
            raise self._error
        self._buf += data
        frames: list[Frame] = []
        try:
            while self._step(frames):
                pass
        except MgmtProtocolError as exc:
            self._error = exc
            self._buf.clear()
            raise
        finally:
            del self._buf[: self._pos]
            self._pos = 0
        return frames

    def _fail(self, message: str) -> NoReturn:
        raise MgmtProtocolError(message)

    def _step(self, frames: list[Frame]) -> bool:
        """Consume one line or one payload; False when more bytes are needed."""
        pos = self._pos
        if self._payload_frame is not None:
            end = pos + self._payload_size
            if len(self._buf) < end:
                return False
            frame = self._payload_frame
            with memoryview(self._buf) as view:
                frame.payload = bytes(view[pos:end])
            self._pos = end
            self._payload_frame = None
            frames.append(frame)
            return True
        nl = self._buf.find(b"\n", pos + self._scan)
        if nl < 0:
            self._scan = len(self._buf) - pos
            if self._header_bytes + self._scan > MAX_HEADER_BYTES:
                self._fail(f"frame header longer than {MAX_HEADER_BYTES} bytes (no end of line)")
            return False
        raw = bytes(self._buf[pos:nl])
        self._pos = nl + 1
        self._scan = 0
        self._header_bytes += len(raw) + 1
        if self._header_bytes > MAX_HEADER_BYTES:
            self._fail(f"frame header longer than {MAX_HEADER_BYTES} bytes")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if b"\0" in raw or b"\r" in raw:
            self._fail(f"control character in header line {raw[:80]!r}")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._fail(f"header line is not UTF-8: {raw[:80]!r}")
        self._line(line, frames)
        return True

    def _line(self, line: str, frames: list[Frame]) -> None:
        if not self._in_frame:
            if line == "":
                self._header_bytes = 0  # blank lines between frames are harmless
                return
            version = line[len("FASPMGR ") :]
            if not line.startswith("FASPMGR ") or not version.isdigit():
                self._fail(f"expected 'FASPMGR 2' header, got {line[:80]!r}")
            self._in_frame = True
            return
        if line == "":
            self._end_frame(frames)
            return
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name:
            self._fail(f"header line is not 'Name: value': {line[:80]!r}")
        value = value[1:] if value.startswith(" ") else value
        if name == "Type":
            self._type = value.strip()
        else:
            self._fields[name] = value

    def _end_frame(self, frames: list[Frame]) -> None:
        if not self._type:
            self._fail("frame has no Type field")
        escaped = self._fields.pop(ESCAPED_FIELDS, "")
        for name in filter(None, (n.strip() for n in escaped.split(","))):
            if name in self._fields:
                self._fields[name] = unescape_value(self._fields[name])
        frame = Frame(self._type, self._fields)
        self._in_frame, self._header_bytes, self._type, self._fields = False, 0, None, {}
        if frame.type != "WRITE":
            frames.append(frame)
            return
        size = frame.int("Size")
        if size is None or size < 0:
            self._fail(f"WRITE frame needs a non-negative Size, got {frame.get('Size')!r}")
        if size > MAX_PAYLOAD_BYTES:
            self._fail(f"WRITE Size {size} exceeds {MAX_PAYLOAD_BYTES} bytes")
        self._payload_frame, self._payload_size = frame, size
