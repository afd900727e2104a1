"""The asyncio driver of the control codec: framed messages over any byte reader/writer pair.

Client side the pair is the SSH process's stdout/stdin, server side our own
stdin/stdout pipes. The peer's end of stream is a normal event (``None``), not
an exception, so each side decides what an unexpected close means.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections import deque
from collections.abc import Callable

from fasp.errors import ProtocolError
from fasp.session import control, messages
from fasp.session.messages import BATCHED, Message

FLUSH_BYTES = 1 << 16
"""Waiting messages are written at once when they reach this many bytes (a row counting the characters it may
share with the one before it as well: a frame then shares far less than :data:`messages.SHARED_MAX`)."""
FLUSH_AFTER = 0.002
"""Seconds the first waiting message waits for others. The end of the event loop's round was too soon: a
receiver's loop turns for every batch of datagrams, so 10,000 small files cost 10,000 writes (pipe, SSH packet,
its encryption) on the server; with 2 ms the server's CPU fell 6.0 -> 5.3 s and the control channel no longer
overflowed the bottleneck beside FIXED (bench small files). 2 ms is 1 % of a 200 ms RTT and under the
feedback interval's floor (``connection.FEEDBACK_MIN``)."""

SSH_PACKET = 9 + 5 + 8 + 16
"""What SSH adds to a write of channel data: the channel message's header, the packet's length and padding length,
its padding (8 of 4-19 bytes) and MAC."""
SSH_PACKET_DATA = 32768  # channel data per SSH packet, at most (OpenSSH's)
TCP_SEGMENT, TCP_IP_HEADERS = 1448, 52  # a segment's payload and headers at a 1,500-byte MTU, with timestamps


def link_bytes(written: int) -> int:
    """What a write of ``written`` bytes of channel data costs the link, about."""
    ssh = written + SSH_PACKET * math.ceil(written / SSH_PACKET_DATA)
    return ssh + TCP_IP_HEADERS * math.ceil(ssh / TCP_SEGMENT)


class Channel:
    """Per-file messages (:data:`BATCHED`) wait :data:`FLUSH_AFTER` and leave together in one write, a run of
    one type as one ``rows`` frame: many files in flight cost one SSH packet (one encryption, one
    syscall) per 2 ms instead of one per message, and their fields' names once. Any other message is written at
    once, behind those already waiting: the order never changes."""

    def __init__(self, reader, writer) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = control.Decoder()
        self._ready: deque[Message] = deque()
        self._closed = False
        self._pending: list[tuple[str, bytes]] = []  # (type, row) of the waiting messages, in order
        self._last: Message | None = None  # the last of them (a row may share a prefix with it)
        self._pending_bytes = 0
        self._flush_soon = False
        self._error: BaseException | None = None  # a deferred write's failure, raised by the next send
        self.on_write: Callable[[int], object] | None = None  # told what each write costs the link (link_bytes)

    async def send(self, message: Message) -> None:
        if self._closed:
            return
        if self._error is not None:
            raise self._error
        if type(message) in BATCHED:  # the row before it in its frame, if one of its type waits last
            prev = self._last if self._pending and self._pending[-1][0] == message.TYPE else None
            row: bytes | None = messages.encode_row(message, prev)
        else:
            row = None
        size = 0 if row is None else len(row) + messages.shares_at_most(message)
        if row is not None and self._pending_bytes + size < FLUSH_BYTES:
            self._pending.append((message.TYPE, row))
            self._last = message
            self._pending_bytes += size + 1
            if not self._flush_soon:
                self._flush_soon = True
                asyncio.get_running_loop().call_later(FLUSH_AFTER, self._flush_later)
        else:
            framed = control.frame(message)  # (a message with no wire form leaves the waiting ones waiting)
            self._write(self._waiting() + framed)
        await self._writer.drain()

    def _waiting(self) -> bytes:
        """The waiting messages framed (:func:`control.frame_runs`); none wait after."""
        data = control.frame_runs(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        return data

    def _write(self, data: bytes) -> None:
        self._writer.write(data)
        if self.on_write is not None:
            self.on_write(link_bytes(len(data)))

    def _flush(self) -> None:
        """Write the waiting messages now (an error is the caller's)."""
        if self._pending:
            self._write(self._waiting())

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
