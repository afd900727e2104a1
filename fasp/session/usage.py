"""What a server engine tells fasp-server about its session, for fasp-server's metrics.

File bytes travel between the engines over UDP, past fasp-server, which only relays the control channel: so
the engine says how many it moved. fasp-server hands it the write end of a pipe (its descriptor number in
FASP_USAGE_FD); the engine writes one JSON line, ``{"direction": "in"|"out", "bytes": N}`` with N the
session's bytes so far, every REPORT_S seconds and once at its end. Under a stock sshd the variable is unset
and nothing is reported. A report that would block is dropped: the next one carries the total anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable

USAGE_FD_ENV = "FASP_USAGE_FD"
REPORT_S = 1.0


class UsageReport:
    """The engine's end of the usage pipe."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._task: asyncio.Task[None] | None = None
        self._report: Callable[[], None] = lambda: None

    @classmethod
    def from_environment(cls) -> UsageReport | None:
        """The pipe fasp-server passed, taken out of the environment (no -e program inherits it), or None."""
        value = os.environ.pop(USAGE_FD_ENV, "")
        if not value.isdigit():
            return None
        fd = int(value)
        try:
            os.set_inheritable(fd, False)
            os.set_blocking(fd, False)
        except OSError:  # not a descriptor of ours
            return None
        return cls(fd)

    def follow(self, direction: str, moved: Callable[[], int]) -> None:
        """Report ``moved()`` bytes in ``direction`` (from the server's side) until :meth:`close`."""
        self._report = lambda: self._write({"direction": direction, "bytes": moved()})
        self._task = asyncio.create_task(self._every())

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(REPORT_S)
            self._report()

    def close(self) -> None:
        """The last report, then the pipe closed."""
        if self._task is not None:
            self._task.cancel()
        self._report()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _write(self, report: dict[str, object]) -> None:
        with contextlib.suppress(OSError):  # full (BlockingIOError) or fasp-server gone: nothing to do
            os.write(self._fd, json.dumps(report).encode() + b"\n")
