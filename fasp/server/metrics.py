"""fasp-server's Prometheus metrics: sessions per user, authentication failures, file bytes by direction.

The front door counts sessions and refused credentials itself; file bytes move between the engines over UDP,
past it, so each server engine reports its session's bytes on a pipe (fasp/session/usage.py), read here.
The endpoint is off unless ``--metrics-port`` is given, and listens on 127.0.0.1 unless ``--metrics-address``
says otherwise. Labels are bounded: ``user`` is an authenticated user of the users file (failed logins carry
no user name, which an attacker would choose), ``method`` and ``direction`` are fixed words.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from types import TracebackType

from prometheus_client import Counter, Gauge

from fasp.session.usage import USAGE_FD_ENV

SESSIONS = Gauge("fasp_server_sessions_running", "Sessions running now (an engine each), per user", ["user"])
SESSIONS_TOTAL = Counter("fasp_server_sessions", "Sessions started, per user", ["user"])
AUTH_FAILURES = Counter("fasp_server_auth_failures", "Refused passwords and public keys", ["method"])
BYTES = Counter(
    "fasp_server_bytes", "File bytes the server's engines moved, in (uploads) or out (downloads)", ["user", "direction"]
)
DIRECTIONS = ("in", "out")
REPORT_LIMIT = 256  # bytes in one usage line: a longer one ends the reading
DRAIN_S = 2.0  # after the engine ended: its last report is already in the pipe


class SessionMeter:
    """One session of ``user`` (``async with``): running while inside; the engine's usage pipe is read into
    BYTES as it reports. Give the engine ``env`` and ``fds``."""

    def __init__(self, user: str) -> None:
        self._user = user
        self._counted = dict.fromkeys(DIRECTIONS, 0)
        self.env: dict[str, str] = {}
        self.fds: tuple[int, ...] = ()

    async def __aenter__(self) -> SessionMeter:
        reader = asyncio.StreamReader(limit=REPORT_LIMIT)
        read_fd, self._write_fd = os.pipe()
        try:  # the read end belongs to its file object from here on, the transport's once connected
            self._transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0)
            )
        except BaseException:
            os.close(self._write_fd)
            raise
        self.env, self.fds = {USAGE_FD_ENV: str(self._write_fd)}, (self._write_fd,)
        self._reader = asyncio.create_task(self._read(reader))
        SESSIONS.labels(self._user).inc()
        SESSIONS_TOTAL.labels(self._user).inc()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        os.close(self._write_fd)  # the engine has ended: with our end closed the reader sees EOF
        try:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, DRAIN_S)
        finally:  # an overlong line stopped the reading before EOF: its pipe is closed all the same
            self._transport.close()
            SESSIONS.labels(self._user).dec()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ValueError, ConnectionError):  # an overlong line (ValueError): stop reading
            while line := await reader.readline():
                self.count(line)

    def count(self, line: bytes) -> None:
        """Add what one report says beyond the previous ones (reports carry totals); ignore anything malformed."""
        try:
            report = json.loads(line)
        except ValueError:
            return
        if not isinstance(report, dict):
            return
        direction, total = report.get("direction"), report.get("bytes")
        if direction not in DIRECTIONS or not isinstance(total, int) or isinstance(total, bool):
            return
        if total > self._counted[direction]:
            BYTES.labels(self._user, direction).inc(total - self._counted[direction])
            self._counted[direction] = total
