"""The management port client (``-M PORT``): events out, commands in, FASPMGR 2 framing both ways.

The engine connects to the manager on 127.0.0.1 and writes every event the
session's tally emits; a reader task decodes the manager's commands and hands
each to the session in order (awaiting it, so a slow stream write holds back
the next WRITE instead of buffering without bound). When the manager goes away
the session is told at once: a transfer nobody watches must not go on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from faspmanager import mgmt
from faspmanager.codes import EngineError, ErrorCode

Handler = Callable[[mgmt.Frame], Awaitable[None]]


class Management:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False

    @classmethod
    async def connect(cls, port: int, timeout: float = 10.0) -> Management:
        """Connect; with a secret from the manager (``mgmt.SECRET_ENV``) present it first, so the manager
        knows this connection is its own program's. The variable is taken out of the environment: the
        processes this engine starts (ssh, hooks) must not be able to pass for it."""
        secret = os.environ.pop(mgmt.SECRET_ENV, None)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        except (TimeoutError, OSError) as exc:
            raise EngineError(ErrorCode.ASCP, f"cannot connect to management port {port}: {exc}") from None
        if secret:
            writer.write(mgmt.encode(mgmt.AUTH_FRAME, {"Secret": secret}))
        return cls(reader, writer)

    def emit(self, event: str, fields: dict) -> None:
        """Queue one event frame (never blocks; ``flush`` waits until it is written)."""
        if self._closed or self._writer.is_closing():
            return
        clean = {k: v for k, v in fields.items() if v is not None}
        self._writer.write(mgmt.encode(event, clean, escape=True))  # file names may hold newlines

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued events are written (bounded: a manager that stopped reading cannot hang us)."""
        if not self._closed and not self._writer.is_closing():
            try:
                await asyncio.wait_for(self._writer.drain(), timeout)
            except (TimeoutError, ConnectionError, OSError):
                pass

    async def serve(self, handler: Handler, on_gone: Callable[[str], None]) -> None:
        """Feed each command to ``handler`` in order until the manager closes the connection."""
        decoder = mgmt.Decoder()
        reason = "management connection closed"
        try:
            while True:
                data = await self._reader.read(1 << 20)
                if not data:
                    break
                for frame in decoder.feed(data):
                    await handler(frame)
        except mgmt.MgmtProtocolError as exc:
            reason = f"malformed management command: {exc}"
        except (ConnectionError, OSError) as exc:
            reason = f"management connection lost: {exc}"
        on_gone(reason)

    async def close(self) -> None:
        if self._closed:
            return
        await self.flush()
        self._closed = True
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        except (TimeoutError, ConnectionError, OSError):
            pass
