"""The asyncio driver of the control codec: framed messages over any byte reader/writer pair.

Client side the pair is the SSH process's stdout/stdin, server side our own
stdin/stdout pipes. The peer's end of stream is a normal event (``None``), not
an exception, so each side decides what an unexpected close means.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import deque

from fasp.errors import ProtocolError
from fasp.session import control
from fasp.session.messages import Begin, FileDone, FileError, Message, Offer, Piece, Skip, Verified, Verify

BATCHED: frozenset[type[Message]] = frozenset({Offer, Begin, Piece, Verify, Verified, FileDone, Skip, FileError})
"""Per-file messages: they wait for the end of the event loop's round and leave together in one write,
so many files in flight cost one SSH packet (one encryption, one syscall) per round instead of one per
message. Any other message is written at once, behind those already waiting: the order never changes."""
FLUSH_BYTES = 1 << 16
"""Waiting messages are written at once when they reach this many bytes."""


class Channel:
    def __init__(self, reader, writer) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = control.Decoder()
        self._ready: deque[Message] = deque()
        self._closed = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_soon = False
        self._error: BaseException | None = None  # a deferred write's failure, raised by the next send

    async def send(self, message: Message) -> None:
        if self._closed:
            return
        if self._error is not None:
            raise self._error
        frame = control.frame(message)
        if type(message) in BATCHED and self._pending_bytes + len(frame) < FLUSH_BYTES:
            self._pending.append(frame)
            self._pending_bytes += len(frame)
            if not self._flush_soon:
                self._flush_soon = True
                asyncio.get_running_loop().call_soon(self._flush_later)
        else:
            self._pending.append(frame)
            self._flush()
        await self._writer.drain()

    def _flush(self) -> None:
        """Write the waiting frames now (an error is the caller's)."""
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._writer.write(data)

    def _flush_later(self) -> None:
        self._flush_soon = False
        if self._closed:
            return
        try:
            self._flush()
        except Exception as exc:  # the writer is gone: the next send says so, the reader sees the close
            self._error = exc

    async def recv(self) -> Message | None:
        """The next message, or None once the peer closed its end."""
        while not self._ready:
            data = await self._reader.read(1 << 16)
            if not data:
                if self._decoder.pending:
                    raise ProtocolError("control channel closed in the middle of a frame")
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._flush()  # what was sent before the close still leaves
        except Exception:
            pass
        try:
            self._writer.close()
        except Exception:  # the transport may already be gone
            pass


async def stdio_channel() -> Channel:
    """A channel over this process's stdin/stdout (server mode under SSH)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, out)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return Channel(reader, writer)
