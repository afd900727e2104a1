"""Sans-IO model of one direction of a WAN path.

The kernel here has no netem, so the WAN emulator forwards every IP packet
through this model in user space.  The model is pure: packets and times go
in, delivery times and drop decisions come out; the driver (bench/wan.py)
owns the clock and the file descriptors.  Order of events for one packet,
as on a real path: a random (Bernoulli) wire loss, then a drop-tail router
queue bounded in bytes, then serialization at the bottleneck rate, then the
one-way propagation delay.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PathSpec:
    """One direction of a path.  ``rate_bps`` None means no bottleneck."""

    rate_bps: float | None
    delay_s: float = 0.0
    loss: float = 0.0
    queue_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError("rate_bps must be positive or None")
        if self.delay_s < 0 or not 0.0 <= self.loss < 1.0 or self.queue_bytes <= 0:
            raise ValueError("need delay_s >= 0, 0 <= loss < 1, queue_bytes > 0")

    @classmethod
    def wan(cls, rate_bps: float, rtt_s: float, loss: float, mtu: int = 1500) -> PathSpec:
        """A direction of a symmetric WAN: half the RTT each way and a router
        queue of one bandwidth-delay product (at least 64 packets, so a path
        with no delay still absorbs a burst)."""
        bdp = int(rate_bps * rtt_s / 8)
        return cls(rate_bps=rate_bps, delay_s=rtt_s / 2, loss=loss, queue_bytes=max(bdp, 64 * mtu))


class Verdict(enum.Enum):
    QUEUED = "queued"
    LOST = "lost"  # random wire loss
    DROPPED = "dropped"  # router queue full (tail drop)


@dataclass
class LinkCounters:
    offered: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    lost: int = 0
    dropped: int = 0


@dataclass
class Link:
    """One direction: queue, bottleneck, delay and loss.

    Because the delay is constant and the bottleneck serves packets in
    order, delivery times are non-decreasing, so a FIFO of (time, packet)
    is the whole schedule.
    """

    spec: PathSpec
    rng: random.Random = field(default_factory=random.Random)
    counters: LinkCounters = field(default_factory=LinkCounters)
    _busy_until: float = 0.0
    _in_flight: deque = field(default_factory=deque)

    def backlog_bytes(self, now: float) -> float:
        """Bytes still waiting for the bottleneck at time ``now``."""
        if self.spec.rate_bps is None:
            return 0.0
        return max(0.0, self._busy_until - now) * self.spec.rate_bps / 8

    def offer(self, now: float, packet: object, size: int | None = None) -> Verdict:
        """A packet arrives at the path's entry at time ``now``.  The model only
        needs its ``size`` (default ``len(packet)``): the packet itself may be any
        handle the driver delivers later (bench/wan.py passes GSO segments)."""
        self.counters.offered += 1
        if self.spec.loss and self.rng.random() < self.spec.loss:
            self.counters.lost += 1
            return Verdict.LOST
        if size is None:
            size = len(packet)  # type: ignore[arg-type]
        if self.spec.rate_bps is None:
            leaves = now
        else:
            if self.backlog_bytes(now) + size > self.spec.queue_bytes:
                self.counters.dropped += 1
                return Verdict.DROPPED
            leaves = max(now, self._busy_until) + size * 8 / self.spec.rate_bps
            self._busy_until = leaves
        self._in_flight.append((leaves + self.spec.delay_s, packet, size))
        return Verdict.QUEUED

    def next_due(self) -> float | None:
        """When the next packet leaves the path, or None if the path is empty."""
        return self._in_flight[0][0] if self._in_flight else None

    def due(self, now: float) -> list:
        """Packets that have reached the far end by ``now``, in order."""
        out = []
        flight = self._in_flight
        while flight and flight[0][0] <= now:
            _, packet, size = flight.popleft()
            out.append(packet)
            self.counters.delivered += 1
            self.counters.delivered_bytes += size
        return out
