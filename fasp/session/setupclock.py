"""When each step of a client's session setup ended, so round trips can be counted per step.

A session's first data byte waits on a chain of exchanges: TCP, SSH (key exchange, authentication), the
remote engine's channel, hello/welcome, the UDP handshake, the first piece request. The clock notes when
each ended (milliseconds since the TCP connect began) and logs it on ``fasp.session.setup`` (stderr with
-D), so ``bench.setup`` can compare the same steps on a path with delay and without: the difference
divided by the round-trip time is the number of round trips each step costs, whatever the CPU spent.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("fasp.session.setup")

STEPS = ("tcp", "ssh", "engine", "welcome", "udp", "piece")
"""In order: TCP connected, SSH authenticated, the engine's channel open (its exec request sent, the hello
right behind it, neither answer awaited), welcome received, data channel open, first piece request received
(an upload's, as the client is the one asking in a download; its offer goes while the UDP handshake runs, so
it may end before "udp"). The first data byte leaves once both ended."""


class SetupClock:
    def __init__(self) -> None:
        self._start = time.monotonic()
        self.marks: dict[str, float] = {}

    def mark(self, step: str) -> None:
        """Note that ``step`` ended now (only its first end counts)."""
        if step not in self.marks:
            self.marks[step] = ms = (time.monotonic() - self._start) * 1000
            log.info("setup %s %.1f ms", step, ms)
