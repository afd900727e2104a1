"""The control channel's framing between two engines, over the SSH channel's stdin/stdout (sans-IO).

Wire form: a 4-byte big-endian length, then that many bytes: one message of :mod:`fasp.session.messages`
(UTF-8 JSON), or a run of one per-file type (``rows``). The length prefix means a reader never guesses where
a message ends; :data:`MAX_FRAME` bounds what a peer can make us hold. The first message each way is
``hello``/``welcome`` carrying :data:`fasp.session.messages.VERSION`; a peer speaking another version is refused
there.

``hello`` and ``welcome`` carry each end's random key share (SSH encrypts them); both ends derive the data
key from the two (:class:`fasp.datapath.seal.SessionKey`), and the UDP data channel never carries either. A
malformed frame raises :class:`ProtocolError` (code 1) at once, never a hang.
"""

from __future__ import annotations

import struct

from fasp.errors import ProtocolError
from fasp.session.messages import Message, decode_frame, encode, rows_body

MAX_FRAME = 1 << 20
"""Largest message body: a message describes files, it never carries their bytes."""

_LEN = struct.Struct(">I")


def frame(message: Message) -> bytes:
    """One framed message."""
    return _framed(encode(message), message.TYPE)


def frame_runs(rows: list[tuple[str, bytes]]) -> bytes:
    """Waiting (type, row) pairs framed in order (rows from :func:`fasp.session.messages.encode_row`), each run
    of one type as one ``rows`` frame."""
    frames, run = [], 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][0] != rows[run][0]:
            type_ = rows[run][0]
            frames.append(_framed(rows_body(type_, [row for _, row in rows[run:i]]), type_))
            run = i
    return b"".join(frames)


def _framed(body: bytes, type_: str) -> bytes:
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"{type_} message of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(body)) + body


class Decoder:
    """Incremental: feed any slices of the byte stream, get whole checked messages back.

    After an error the stream is out of sync; every later feed raises again.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Message]:
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        out: list[Message] = []
        at = 0  # frames are cut from the front once, after the loop: a feed may hold hundreds of them
        try:
            while len(buf) - at >= _LEN.size:
                (length,) = _LEN.unpack_from(buf, at)
                if length > MAX_FRAME:
                    raise ProtocolError(f"control frame of {length} bytes exceeds {MAX_FRAME}")
                if len(buf) - at < _LEN.size + length:
                    break
                body = bytes(buf[at + _LEN.size : at + _LEN.size + length])
                at += _LEN.size + length
                out += decode_frame(body)
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
