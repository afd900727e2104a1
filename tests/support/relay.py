"""An impairing UDP relay for tests: loss, reordering, duplication, delay, capture, tampering; seedable.

    async with Relay(target=("127.0.0.1", port), loss=0.05, reorder=0.05, duplicate=0.02, seed=1) as relay:
        ... connect to ("127.0.0.1", relay.port) ...

Clients send to ``relay.port``; each client address gets its own upstream
socket towards ``target``, and answers travel back the same way, so both
directions are impaired alike. ``tamper(datagram, direction)`` (direction is
"up" towards the target or "down" back to the client) may return a list of
datagrams to forward instead (empty: drop; extra items: forged or replayed ones).

``rate_mbit`` makes each direction a bottleneck: datagrams leave one after the
other at that rate from a FIFO holding up to ``queue_ms`` of it (tail drop
beyond, counted as ``overflowed``). ``counts.bins`` holds the bytes delivered per
direction and BIN seconds, for rates measured on the wire. ``stamped`` sets
``sent_at`` before each datagram is handled (a tamper reads it): when its sender
sent it, by the kernel's receive timestamp. ``relay_in_thread`` runs a relay on
a thread of its own, for tests that drive engine processes.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import random
import socket
import struct
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

BIN = 0.1  # seconds per counts.bins slot
SIOCGSTAMPNS = 0x8907  # Linux: the kernel's receive time (CLOCK_REALTIME) of the datagram a socket read last

_running = 0  # relays serving in this process: while any does, what the process held before the first stays frozen
_running_lock = threading.Lock()


def _freeze() -> None:
    """Keep the garbage collector off what the process held before a relay started. A relay shares the pytest
    process: a full collection walks every object the suite made so far (250 ms late in the suite, every few
    seconds) and holds the relay meanwhile, so its link went dark, and what the sender sent into the dark then
    met the bottleneck at once and overflowed it (FAIR through a 25 ms buffer: 5,000 datagrams lost to 17
    pauses and 1.5-1.7 times the file offered, the engine's rate all the while at the link's). A real link
    never pauses."""
    global _running
    with _running_lock:
        if not _running:
            gc.freeze()
        _running += 1


def _unfreeze() -> None:
    global _running
    with _running_lock:
        _running -= 1
        if not _running:
            gc.unfreeze()


@dataclass
class RelayCounts:
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    overflowed: int = 0
    bytes: dict = field(default_factory=lambda: {"up": 0, "down": 0})
    bins: dict = field(default_factory=lambda: {"up": defaultdict(int), "down": defaultdict(int)})

    def mbit(self, direction: str, since: float, until: float) -> float:
        """Mbit/s delivered in ``direction`` between two time.monotonic() instants (whole bins only)."""
        lo, hi = int(since / BIN) + 1, int(until / BIN)
        bins = self.bins[direction]
        return sum(bins.get(i, 0) for i in range(lo, hi)) * 8 / 1e6 / max((hi - lo) * BIN, BIN)


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram, relay: Relay):
        self.on_datagram = on_datagram
        self.relay = relay
        self.transport = None
        self.pending: list[tuple[bytes, float]] | None = None  # (datagram, sent_at) while opening

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        for force, opt in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # room for bursts: the relay is slow
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, 8 << 20)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
        if self.relay.stamped:
            try:
                self._stamp(sock)  # the first ask turns the socket's timestamps on (and finds none yet)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

    def datagram_received(self, data, addr):
        relay = self.relay
        if relay.stamped:
            relay.sent_at = self._stamp(self.transport.get_extra_info("socket")) - relay.clock_offset
        self.on_datagram(data, addr)

    @staticmethod
    def _stamp(sock) -> float:
        """When the datagram read last arrived, by the kernel (real time): on loopback, when its sender sent it,
        however late the relay read it."""
        sec, nsec = struct.unpack("qq", fcntl.ioctl(sock.fileno(), SIOCGSTAMPNS, bytes(16)))
        return sec + nsec / 1e9

    def error_received(self, exc):  # ICMP for an earlier datagram: the relay keeps going, like a network
        pass


class Relay:
    def __init__(
        self,
        target: tuple[str, int],
        *,
        loss: float = 0.0,
        reorder: float = 0.0,
        duplicate: float = 0.0,
        delay: float = 0.0,
        reorder_delay: float = 0.005,
        seed: int | None = None,
        capture: bool = False,
        tamper=None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_mbit: float = 0.0,
        queue_ms: float = 250.0,
        stamped: bool = False,
    ):
        self.target = target
        self.loss, self.reorder, self.duplicate = loss, reorder, duplicate
        self.delay, self.reorder_delay = delay, reorder_delay
        self.random = random.Random(seed)
        self.capture = capture
        self.captured: list[tuple[str, bytes]] = []
        self.tamper = tamper
        self.counts = RelayCounts()
        self._host = host
        self._port = port
        self.rate_mbit, self.queue_ms = rate_mbit, queue_ms
        self.stamped = stamped
        self.sent_at = 0.0  # (stamped) the time.monotonic() its sender sent the datagram being handled
        self.clock_offset = time.time() - time.monotonic()  # the kernel stamps by the real-time clock
        self._free_at = {"up": 0.0, "down": 0.0}  # when each direction's bottleneck is next idle
        self._front = None
        self._upstreams: dict[tuple, _Side] = {}
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def port(self) -> int:
        return self._front.transport.get_extra_info("sockname")[1]

    async def __aenter__(self) -> Relay:
        loop = asyncio.get_running_loop()
        _, self._front = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_client, self), local_addr=(self._host, self._port)
        )
        _freeze()
        return self

    async def __aexit__(self, *exc) -> None:
        _unfreeze()
        for timer in self._timers:
            timer.cancel()
        for side in self._upstreams.values():
            if side.transport is not None:
                side.transport.close()
        self._front.transport.close()

    def _from_client(self, data: bytes, addr) -> None:
        up = self._upstreams.get(addr)
        if up is None:
            up = self._upstreams[addr] = _Side(lambda d, _a, client=addr: self._impair(d, "down", client), self)
            up.pending = []
            asyncio.get_running_loop().create_task(self._open_upstream(up, addr))
        if up.pending is not None:  # the upstream socket is still being opened
            up.pending.append((data, self.sent_at))
        else:
            self._impair(data, "up", addr)

    async def _open_upstream(self, up: _Side, client) -> None:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: up, remote_addr=self.target)
        pending, up.pending = up.pending, None
        for data, self.sent_at in pending:
            self._impair(data, "up", client)

    def _impair(self, data: bytes, direction: str, client) -> None:
        if self.capture:
            self.captured.append((direction, data))
        items = [data] if self.tamper is None else list(self.tamper(data, direction))
        rnd = self.random
        for item in items:
            if rnd.random() < self.loss:
                self.counts.dropped += 1
                continue
            copies = 1
            if rnd.random() < self.duplicate:
                copies = 2
                self.counts.duplicated += 1
            for _ in range(copies):
                wait = self.delay
                if rnd.random() < self.reorder:
                    wait += rnd.uniform(0.2, 1.0) * self.reorder_delay
                    self.counts.reordered += 1
                if self.rate_mbit:
                    now = time.monotonic()
                    start = max(now, self._free_at[direction])
                    if start - now > self.queue_ms / 1000:
                        self.counts.overflowed += 1
                        continue
                    self._free_at[direction] = start + len(item) * 8 / (self.rate_mbit * 1e6)
                    wait += self._free_at[direction] - now
                if wait > 0:
                    self._later(wait, item, direction, client)
                else:
                    self._deliver(item, direction, client)

    def _later(self, wait: float, data: bytes, direction: str, client) -> None:
        def fire():
            self._timers.discard(timer)
            self._deliver(data, direction, client)

        timer = asyncio.get_running_loop().call_later(wait, fire)
        self._timers.add(timer)

    def _deliver(self, data: bytes, direction: str, client) -> None:
        self.counts.forwarded += 1
        self.counts.bytes[direction] += len(data)
        self.counts.bins[direction][int(time.monotonic() / BIN)] += len(data)
        if direction == "up":
            up = self._upstreams[client]
            if up.transport is not None:
                up.transport.sendto(data)
        else:
            self._front.transport.sendto(data, client)


@contextmanager
def relay_in_thread(**kwargs):
    """A Relay (``Relay(**kwargs)``, target may be set later) serving on a thread with its own event loop."""
    kwargs.setdefault("target", None)
    ready: list = []
    started = threading.Event()
    stop: list = []

    async def serve():
        async with Relay(**kwargs) as relay:
            done = asyncio.Event()
            stop.append((asyncio.get_running_loop(), done))
            ready.append(relay)
            started.set()
            await done.wait()

    def main():
        try:
            asyncio.run(serve())
        finally:
            started.set()

    thread = threading.Thread(target=main, name="relay", daemon=True)
    thread.start()
    started.wait(10)
    if not ready:
        raise RuntimeError("the relay did not start")
    try:
        yield ready[0]
    finally:
        loop, done = stop[0]
        loop.call_soon_threadsafe(done.set)
        thread.join(10)
