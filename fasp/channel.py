"""The asyncio driver of the control codec: framed messages over any byte reader/writer pair.

Client side the pair is the SSH process's stdout/stdin, server side our own
stdin/stdout pipes. The peer's end of stream is a normal event (``None``), not
an exception, so each side decides what an unexpected close means.
"""
from __future__ import annotations

import asyncio
import os
import sys

from . import control


class Channel:
    def __init__(self, reader, writer) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = control.Decoder()
        self._ready: list[dict] = []
        self._closed = False

    async def send(self, msg_type: str, **fields) -> None:
        if self._closed:
            return
        self._writer.write(control.encode(msg_type, **fields))
        await self._writer.drain()

    async def recv(self) -> dict | None:
        """The next message, or None once the peer closed its end."""
        while not self._ready:
            data = await self._reader.read(1 << 16)
            if not data:
                if self._decoder.pending:
                    raise control.ControlError("control channel closed in the middle of a frame")
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.pop(0)

    def close(self) -> None:
        self._closed = True
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
