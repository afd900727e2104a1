"""A fasp-server whose UDP goes through the impairment relay: tests judge options on the relay's wire."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fasp.datapath import datagram
from tests.support.programs import ENGINE
from tests.support.relay import Relay, relay_in_thread
from tests.support.servers import FaspServer, start_fasp_server


@contextmanager
def relayed_server(workdir: Path) -> Iterator[tuple[FaspServer, Relay]]:
    """The server's engines bind UDP on 127.0.0.2 at the relay's port; clients reach them through the relay."""
    with relay_in_thread(stamped=True) as relay:
        relay.target = ("127.0.0.2", relay.port)
        engine = ["env", "FASP_UDP_BIND=127.0.0.2", *ENGINE]
        with start_fasp_server(workdir, udp_port=relay.port, engine_command=engine) as server:
            yield server, relay


def reset(
    relay: Relay, *, loss: float = 0.0, delay: float = 0.0, rate_mbit: float = 0.0, queue_ms: float = 250.0
) -> list:
    """Fresh counts and only the given impairment; returns the list (direction, type, size) of every datagram."""
    seen: list = []
    relay.stamps = {"up": [], "down": []}  # DATA: (when its sender sent it, link bytes) as they came

    def tap(data: bytes, direction: str) -> list[bytes]:
        kind = datagram.kind(data)
        seen.append((direction, kind, len(data)))
        if kind == datagram.DATA:
            relay.stamps[direction].append((relay.sent_at, len(data) + datagram.IP_UDP_HEADERS))
        return [data]

    relay.tamper = tap
    relay.loss, relay.delay, relay.rate_mbit, relay.queue_ms = loss, delay, rate_mbit, queue_ms
    relay.counts.overflowed = 0
    relay.counts.bytes.update(up=0, down=0)
    relay.counts.bins["up"].clear()
    relay.counts.bins["down"].clear()
    return seen


def paced_mbit(relay: Relay, direction: str, since: float, until: float, cap: float) -> float:
    """Mbit/s of the DATA the relay carried in ``direction`` that its sender sent between two time.monotonic()
    instants, by when the sender sent each (the kernel's stamp: one host, one clock), counting each gap between
    them up to ``cap`` seconds: the most its token bucket saves up (fasp/datapath/connection.py). A gap beyond it
    is sending time a descheduled sender cannot make up."""
    sent = sorted((t, n) for t, n in relay.stamps[direction] if since <= t < until)
    credited = sum(min(b - a, cap) for (a, _), (b, _) in zip(sent, sent[1:]))
    return sum(n for _, n in sent[1:]) * 8 / 1e6 / max(credited, 1e-9)
