"""The control channel between two engines, over the SSH channel's stdin/stdout (sans-IO).

Wire form: a 4-byte big-endian length, then that many bytes of UTF-8 JSON, an
object whose ``t`` names the message. JSON keeps the codec small and the
messages readable in a trace; the length prefix means a reader never guesses
where a message ends. The first message each way is ``hello``/``welcome``
carrying :data:`VERSION`; a peer speaking another version is refused there.

``hello`` and ``welcome`` carry each end's random key share (SSH encrypts them);
both ends derive the data key from the two (:class:`fasp.datapath.seal.SessionKey`), and
the UDP data channel never carries either (version 2: version 1's ``hello`` sent
a key the client chose alone). Every message is checked against :data:`SCHEMA`
on decode: a malformed frame raises :class:`ProtocolError` (code 1) at once,
never a hang.
"""
from __future__ import annotations

import json
import struct

from fasp.errors import ProtocolError

VERSION = 2
MAX_FRAME = 1 << 20
"""Largest message body: a message describes files, it never carries their bytes."""

_LEN = struct.Struct(">I")

# field name -> accepted JSON types; a field missing here is not checked (newer peers add fields)
_INT = (int,)
_STR = (str,)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))
SCHEMA: dict[str, dict[str, tuple]] = {
    # session setup (client -> server, server -> client)
    "hello": {"v": _INT, "session": _STR, "share": _STR, "key_bytes": _INT, "direction": _STR, "dest": _STR,
              "datagram_size": _INT, "udp_port": _INT, "rate": (dict,), "opts": (dict,)},
    "welcome": {"v": _INT, "share": _STR, "udp_port": _INT, "rate": (dict,)},
    # UDP could not pass (-y 1): the client asks for the HTTP fallback, the server gives its one-time token
    "fallback": {"jpeg": (bool,)},
    "fallback_ok": {"token": _STR},
    # download requests (client -> server): one source argument, or one keepalive START
    "get": {"arg": _INT, "source": _STR, "start": _OPT_INT, "end": _OPT_INT},
    "listed": {"arg": _INT, "files": _INT, "dirs": _INT, "bytes": _INT},
    # per file (sender -> receiver)
    "file": {"fid": _INT, "arg": _INT, "rel": _STR, "lone": (bool,), "size": _OPT_INT,
             "mtime": (int, float), "atime": (int, float), "mode": _INT},
    "chunk": {"fid": _INT, "start": _INT, "end": _INT},
    "eof": {"fid": _INT, "size": _INT},
    "verified": {"fid": _INT, "ok": (bool,)},
    "keep": {"arg": _INT, "top": _STR, "names": (list,), "done": (bool,)},
    "sent": {"fid": _INT},
    "abort": {"fid": _INT, "desc": _STR},  # the source failed to read (35): the file fails, the session goes on
    # per file (receiver -> sender)
    "verify": {"fid": _INT, "have": _INT, "digest": _STR},
    "begin": {"fid": _INT, "start": _INT},
    "piece": {"fid": _INT, "pid": _INT, "start": _INT, "end": _INT},
    "fdone": {"fid": _INT, "written": _INT, "checksum": _OPT_STR},
    "skip": {"fid": _INT, "reason": _STR},
    "kept": {"arg": _INT, "deleted": _INT},
    # either way
    "ferror": {"fid": _OPT_INT, "arg": _INT, "path": _STR, "code": _INT, "desc": _STR},
    "argdone": {"arg": _INT},
    "rate": {"target": _INT, "min": _INT, "policy": _STR},
    "cancel": {},
    "bye": {},
    "error": {"code": _INT, "desc": _STR},
}


def share(msg: dict) -> bytes:
    """The key share a hello or welcome carries (hex), or ProtocolError."""
    try:
        return bytes.fromhex(msg["share"])
    except ValueError:
        raise ProtocolError(f"{msg['t']}.share is not hex") from None


def encode(msg_type: str, **fields) -> bytes:
    """One framed message. Fields must be JSON-serialisable (bytes travel as hex)."""
    if msg_type not in SCHEMA:
        raise ProtocolError(f"unknown control message type {msg_type!r}")
    body = json.dumps({"t": msg_type, **fields}, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"{msg_type} message of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(body)) + body


def check(msg: object) -> dict:
    """``msg`` if it is a well-formed message, else ProtocolError naming the fault."""
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ProtocolError("control message is not an object with a type")
    schema = SCHEMA.get(msg["t"])
    if schema is None:
        raise ProtocolError(f"unknown control message type {msg['t']!r}")
    for name, types in schema.items():
        if name not in msg:
            raise ProtocolError(f"{msg['t']} message lacks field {name!r}")
        value = msg[name]
        if isinstance(value, bool) and bool not in types:
            raise ProtocolError(f"{msg['t']}.{name} has the wrong type")
        if not isinstance(value, types):
            raise ProtocolError(f"{msg['t']}.{name} has the wrong type ({type(value).__name__})")
    return msg


class Decoder:
    """Incremental: feed any slices of the byte stream, get whole checked messages back.

    After an error the stream is out of sync; every later feed raises again.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[dict]:
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        out: list[dict] = []
        at = 0  # frames are cut from the front once, after the loop: a feed may hold hundreds of them
        try:
            while len(buf) - at >= _LEN.size:
                (length,) = _LEN.unpack_from(buf, at)
                if length > MAX_FRAME:
                    raise ProtocolError(f"control frame of {length} bytes exceeds {MAX_FRAME}")
                if len(buf) - at < _LEN.size + length:
                    break
                body = bytes(buf[at + _LEN.size:at + _LEN.size + length])
                at += _LEN.size + length
                try:
                    msg = json.loads(body.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise ProtocolError(f"control frame is not UTF-8 JSON: {exc}") from None
                out.append(check(msg))
        except ProtocolError as exc:
            self._error = exc
            raise
        finally:
            del buf[:at]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back (non-zero at EOF means a truncated stream)."""
        return len(self._buf)
