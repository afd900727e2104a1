"""Transport behaviour beyond moving bytes: pacing, live rate changes, handshake and failure codes."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import os
import time
from contextlib import AsyncExitStack

import pytest

from fasp.datapath import datagram
from fasp.datapath.connection import BURST, BURST_RTT, TICK
from fasp.datapath.udpchannel import RateSettings, Transport
from faspmanager.codes import EngineError
from tests.support.relay import Relay

from .conftest import CLEAR, aio, pair, session_key

pytestmark = pytest.mark.timeout(60)


async def _paced_transfer(tmp_path, rate: RateSettings, seconds: float, change=None):
    """Send more than `seconds` worth through a relay; return (the DATA the relay carried from the client in the
    window: (send time in seconds from the window's start, as the kernel stamped it, link bytes) each, stats
    samples, change)."""
    size = int(rate.target_kbps * 1000 / 8 * seconds * 1.5)
    data = os.urandom(size)
    fd = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    samples = []
    wire: list[tuple[float, int]] = []
    rtts: list[tuple[float, float]] = []  # (time, the client's smoothed RTT), seconds
    try:
        async with AsyncExitStack() as stack:
            relays = []
            window = [False]

            def tap(datagram_: bytes, direction: str) -> list[bytes]:
                if window[0] and direction == "up" and datagram.kind(datagram_) == datagram.DATA:
                    # when the sender paced it out, by the kernel's stamp, however late the relay read it
                    wire.append((relays[0].sent_at - t0, len(datagram_) + datagram.IP_UDP_HEADERS))
                return [datagram_]

            async def via(port):
                relays.append(
                    await stack.enter_async_context(Relay(target=("127.0.0.1", port), tamper=tap, stamped=True))
                )
                return relays[0].port

            async with pair(via=via, rate=rate) as (client, server):
                rx = asyncio.ensure_future(server.receive(1, fd, 0, size))
                tx = asyncio.ensure_future(client.send(1, data, 0, size))
                await asyncio.sleep(0.5)  # past the start
                t0 = time.monotonic()
                window[0] = True
                while time.monotonic() - t0 < seconds:
                    await asyncio.sleep(0.1)
                    stats = client.stats()
                    samples.append((time.monotonic() - t0, stats["rate_kbps"]))
                    rtts.append((samples[-1][0], (stats["rtt_ms"] or 0.0) / 1000))
                    if change and samples[-1][0] >= change[0] and not change[2:]:
                        client.set_rate(change[1])
                        change = (*change, time.monotonic() - t0)
                window[0] = False
                tx.cancel()
                rx.cancel()
                await asyncio.gather(tx, rx, return_exceptions=True)
    finally:
        os.close(fd)
    return wire, samples, change, rtts


def paced_rates(
    wire: list[tuple[float, int]],
    rate_bps: float,
    rtts: list[tuple[float, float]],
    since: float = 0.0,
    until: float = float("inf"),
) -> tuple[float, float]:
    """The rate (bits/s) the pacer sent at in [since, until) of the sender's clock, bounded from below and above
    whatever the host did meanwhile. Each send round carries what the token bucket saved up since the last one,
    the rate times the gap, up to the bucket's cap (connection.py: a quarter of the RTT of the rate, 2 TICKs to
    BURST, and 4 datagrams at least): what a late wake-up saved up goes at once, so no more may pile up, and a host
    that leaves the loop descheduled longer makes sending time no pacer may make up. So by design, with each round's cap
    between its values at the least and the largest smoothed RTT sampled around it (``rtts``, every 0.1 s),
    bytes / sum(min(gap, larger cap)) <= rate <= bytes / sum(min(gap, smaller cap)), up to a datagram.
    A pacer at another rate, or one that bursts what a stall saved up, falls outside."""

    def cap(rtt_: float) -> float:
        return max(min(max(BURST_RTT * rtt_, 2 * TICK), BURST), 4 * 1400 * 8 / rate_bps)

    rounds: dict[float, int] = {}
    for t, n in wire:
        if since <= t < until:
            rounds[t] = rounds.get(t, 0) + n
    times = sorted(rounds)
    gaps = [b - a for a, b in zip(times, times[1:])]
    bits = sum(rounds[t] for t in times[1:]) * 8  # the first round's gap began before the window
    at = [t for t, _ in rtts]

    def around(t: float) -> list[float]:  # the samples just before and after t
        i = bisect.bisect(at, t)
        return [r for _, r in rtts[max(i - 1, 0) : i + 1]] or [0.0]

    ends = [around(t) for t in times[1:]]
    low = bits / sum(min(g, cap(max(r))) for g, r in zip(gaps, ends))
    high = bits / sum(min(g, cap(min(r))) for g, r in zip(gaps, ends))
    return low, high


@pytest.mark.slow
@aio
async def test_fixed_rate_is_held_on_loopback(tmp_path):
    wire, samples, _, rtts = await _paced_transfer(tmp_path, RateSettings(20_000, policy="fixed"), 5.0)
    low, high = paced_rates(wire, 20e6, rtts)
    assert 18e6 <= high and low <= 22e6, (low, high)
    assert all(r == 20_000 for _, r in samples)


@pytest.mark.slow
@aio
async def test_set_rate_takes_effect_mid_transfer(tmp_path):
    wire, samples, change, rtts = await _paced_transfer(
        tmp_path, RateSettings(20_000, policy="fixed"), 3.0, change=(1.0, RateSettings(5_000, policy="fixed"))
    )
    after = [r for t, r in samples if t >= 1.0 + 1.0]
    assert after and all(r == 5_000 for r in after)
    # on the wire, by the sender's clock: 20 Mbit/s until the change, 5 Mbit/s from a moment after it
    low, high = paced_rates(wire, 20e6, rtts, until=change[2])
    assert 18e6 <= high and low <= 22e6, ("before", low, high)
    low, high = paced_rates(wire, 5e6, rtts, since=change[2] + 0.05)
    assert 4.5e6 <= high and low <= 5.5e6, ("after", low, high)


@pytest.mark.slow
@aio
async def test_fair_rate_obeys_target_and_change(tmp_path):
    _, samples, _, _ = await _paced_transfer(
        tmp_path, RateSettings(30_000, policy="fair"), 2.0, change=(0.5, RateSettings(8_000, policy="fair"))
    )
    assert all(r <= 30_000 for _, r in samples)
    assert all(r <= 8_000 for t, r in samples if t >= 1.0)


@aio
async def test_connect_times_out_without_listener():
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # a port that swallows datagrams and never answers
    try:
        t0 = time.monotonic()
        with pytest.raises(EngineError) as err:
            await Transport.connect("127.0.0.1", s.getsockname()[1], session_id=os.urandom(16), key=CLEAR, timeout=0.5)
        assert err.value.code == 15
        assert time.monotonic() - t0 < 2
    finally:
        s.close()


@aio
async def test_connect_with_wrong_key_is_never_answered():
    sid = os.urandom(16)
    server = await Transport.listen("127.0.0.1", 0, session_id=sid, key=session_key(16, b"a"))
    try:
        with pytest.raises(EngineError) as err:
            await Transport.connect(
                "127.0.0.1", server.local_port, session_id=sid, key=session_key(16, b"b"), timeout=0.4
            )
        assert err.value.code == 15
        assert server.stats()["datagrams_rejected"] >= 1
    finally:
        await server.close()


@aio
async def test_peer_closing_fails_pending_send_with_16():
    async with pair() as (client, server):
        fd = os.open("/dev/null", os.O_WRONLY)
        try:
            tx = asyncio.ensure_future(client.send(1, os.urandom(10_000), 0, 10_000))  # nobody registered it
            await asyncio.sleep(0.2)
            await server.close()
            with pytest.raises(EngineError) as err:
                await asyncio.wait_for(tx, 5)
            assert err.value.code == 16
            with pytest.raises(EngineError) as err:  # and later work is refused at once
                await asyncio.wait_for(client.send(2, b"x", 0, 1), 1)
            assert err.value.code == 16
        finally:
            os.close(fd)


@pytest.mark.slow
@aio
async def test_silent_peer_fails_send_with_16_and_stall_with_40(tmp_path):
    async with AsyncExitStack() as stack:
        relays = []

        async def via(port):
            relays.append(await stack.enter_async_context(Relay(target=("127.0.0.1", port))))
            return relays[0].port

        async with pair(via=via) as (client, server):
            client.peer_timeout, client.stall_timeout = 0.5, 30
            relays[0].loss = 1.0  # the network dies
            with pytest.raises(EngineError) as err:
                await asyncio.wait_for(client.send(1, b"x" * 5000, 0, 5000), 5)
            assert err.value.code == 16
            relays[0].loss = 0.0
            client.peer_timeout, client.stall_timeout = 30, 0.5
            # the peer is alive but never registered file 2: no progress
            with pytest.raises(EngineError) as err:
                await asyncio.wait_for(client.send(2, b"x" * 5000, 0, 5000), 5)
            assert err.value.code == 40


@aio
async def test_closed_transport_refuses_work_and_close_is_idempotent():
    async with pair() as (client, server):
        await client.close()
        await client.close()
        with pytest.raises(EngineError):
            await client.send(1, b"abc", 0, 3)


@aio
async def test_idle_listener_waiting_for_its_peer_does_not_spin(tmp_path):
    server = await Transport.listen("127.0.0.1", 0, session_id=os.urandom(16), key=CLEAR)
    fd = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    try:
        rx = asyncio.ensure_future(server.receive(1, fd, 0, 100))
        t0 = time.process_time()
        await asyncio.sleep(0.5)
        assert time.process_time() - t0 < 0.1  # an idle pump sleeps
        rx.cancel()
        await asyncio.gather(rx, return_exceptions=True)
    finally:
        os.close(fd)
        await server.close()


@pytest.mark.slow
@aio
async def test_peer_closing_right_after_confirmation_spares_a_receive_still_writing(tmp_path, monkeypatch):
    real_pwrite = os.pwrite

    def slow_pwrite(fd, data, offset):  # a slow disk: writes land well after the peer hears "complete"
        time.sleep(0.05)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", slow_pwrite)
    data = os.urandom(300_000)
    sid = os.urandom(16)
    server = await Transport.listen("127.0.0.1", 0, session_id=sid, key=session_key(16))
    client = await Transport.connect("127.0.0.1", server.local_port, session_id=sid, key=session_key(16))
    fd = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    try:
        rx = asyncio.ensure_future(server.receive(1, fd, 0, len(data)))
        await asyncio.wait_for(client.send(1, data, 0, len(data)), 20)
        await client.close()
        await asyncio.wait_for(rx, 10)
    finally:
        os.close(fd)
        await client.close()
        await server.close()
    assert hashlib.sha256((tmp_path / "dst").read_bytes()).digest() == hashlib.sha256(data).digest()


@aio
async def test_a_dialing_transport_sends_only_hellos_until_answered():
    """dial() returns at once; a send meanwhile waits: nothing but hellos reaches a port that never answers,
    and established() then ends with code 15."""
    import socket

    from fasp.datapath import datagram

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    client = await Transport.dial("127.0.0.1", sink.getsockname()[1], session_id=os.urandom(16), key=CLEAR)
    try:
        sending = asyncio.ensure_future(client.send(1, os.urandom(10_000), 0, 10_000))
        with pytest.raises(EngineError) as err:
            await client.established(0.5)
        assert err.value.code == 15 and not sending.done()
        kinds = []
        while True:
            try:
                kinds.append(datagram.kind(sink.recv(65536)))
            except BlockingIOError:
                break
        assert kinds and set(kinds) == {datagram.HELLO}, kinds
        sending.cancel()
    finally:
        await client.close()
        sink.close()


@aio
async def test_a_send_started_while_dialing_arrives_once_answered(tmp_path):
    sid = os.urandom(16)
    data = os.urandom(300_000)
    server = await Transport.listen("127.0.0.1", 0, session_id=sid, key=session_key(16, b"k"))
    client = await Transport.dial("127.0.0.1", server.local_port, session_id=sid, key=session_key(16, b"k"))
    fd = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
    try:
        sending = asyncio.ensure_future(client.send(1, data, 0, len(data)))  # before the answer
        receiving = asyncio.ensure_future(server.receive(1, fd, 0, len(data)))
        await client.established(5)
        await asyncio.wait_for(asyncio.gather(sending, receiving), 20)
        assert os.fstat(fd).st_size == len(data)
        assert hashlib.sha256(os.pread(fd, len(data), 0)).digest() == hashlib.sha256(data).digest()
    finally:
        os.close(fd)
        await client.close()
        await server.close()


@aio
async def test_a_listener_is_reached_by_the_first_authenticated_datagram():
    """reached() waits for the peer's hello; a hello under another key does not count."""
    sid = os.urandom(16)
    server = await Transport.listen("127.0.0.1", 0, session_id=sid, key=session_key(16, b"a"))
    try:
        with pytest.raises(EngineError):
            await Transport.connect(
                "127.0.0.1", server.local_port, session_id=sid, key=session_key(16, b"b"), timeout=0.3
            )
        reached = asyncio.ensure_future(server.reached())
        await asyncio.sleep(0.1)
        assert not reached.done()
        client = await Transport.dial("127.0.0.1", server.local_port, session_id=sid, key=session_key(16, b"a"))
        try:
            await client.reached()  # the dialing end knows its peer from the start
            await asyncio.wait_for(reached, 5)
            await client.established(5)
        finally:
            await client.close()
    finally:
        await server.close()
