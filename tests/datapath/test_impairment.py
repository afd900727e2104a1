"""Transfers through the impairing relay: loss, reordering, duplication, tampering, eavesdropping."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from contextlib import AsyncExitStack

import pytest

from fasp.datapath import datagram
from tests.support.files import sha256
from tests.support.relay import Relay

from .conftest import CLEAR, aio, pair, session_key, transfer

pytestmark = pytest.mark.timeout(90)


async def _through(stack: AsyncExitStack, **relay_kw):
    relays = []

    async def via(port):
        relays.append(await stack.enter_async_context(Relay(target=("127.0.0.1", port), **relay_kw)))
        return relays[-1].port

    return via, relays


@pytest.mark.parametrize("key", [session_key(32, b"K"), CLEAR], ids=["aes256", "clear"])
@aio
async def test_loss_reorder_duplication(tmp_path, key):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(4 << 20))
    async with AsyncExitStack() as stack:
        via, relays = await _through(stack, loss=0.05, reorder=0.05, duplicate=0.02, seed=1)
        async with pair(key=key, via=via) as (client, server):
            await transfer(client, server, 1, src, dst)
            sent = client.stats()
        counts = relays[0].counts
        assert counts.dropped > 100 and counts.duplicated > 20 and counts.reordered > 100
    assert sha256(dst) == sha256(src)
    assert dst.stat().st_size == 4 << 20
    assert sent["bytes_retransmitted"] > 0
    # each lost datagram costs about one resend, plus a few spurious ones where the relay held a resend back
    # longer than the reorder margin. Second copies are not resends: they fill room the link has spare once no
    # new data is left (half a round trip's worth), so they grow with a busy host's round trips, not with loss
    # (one CI run: 25 % of the bytes resent, 21 % of them copies, 4 % resends)
    resent = sent["bytes_retransmitted"] - sent["bytes_copied"]
    assert 0 < resent < 2 * counts.dropped * 1400


@aio
async def test_tampered_forged_and_replayed_datagrams_are_rejected(tmp_path):
    rnd = random.Random(7)
    seen: list[bytes] = []
    forged = {"flipped": 0, "replayed": 0, "foreign": 0}
    active = [True]

    def tamper(d: bytes, direction: str):
        out = [d]
        r = rnd.random() if active[0] else 1.0
        if r < 0.03:  # flip one bit anywhere: header, body or tag
            b = bytearray(d)
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
            out.append(bytes(b))
            forged["flipped"] += 1
        elif r < 0.06 and seen:  # replay an earlier datagram
            out.append(rnd.choice(seen))
            forged["replayed"] += 1
        elif r < 0.07:  # a well-formed header of another session
            out.append(datagram.pack_header(datagram.DATA, 0, os.urandom(datagram.CID_SIZE), 1, 0, 0) + os.urandom(100))
            forged["foreign"] += 1
        if len(seen) < 2000:
            seen.append(d)
        return out

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(2 << 20))
    async with AsyncExitStack() as stack:
        via, _ = await _through(stack, tamper=tamper, seed=3)
        async with pair(via=via) as (client, server):
            await transfer(client, server, 1, src, dst)
            active[0] = False
            await asyncio.sleep(0.3)  # let the last forgeries arrive
            rejected = client.stats()["datagrams_rejected"] + server.stats()["datagrams_rejected"]
    assert sha256(dst) == sha256(src)
    assert all(forged.values())
    assert rejected == sum(forged.values())


@pytest.mark.slow
@aio
async def test_no_plaintext_on_the_wire(tmp_path):
    data = os.urandom(1 << 20)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    async with AsyncExitStack() as stack:
        via, relays = await _through(stack, capture=True)
        async with pair(key=session_key(16, b"x"), via=via) as (client, server):
            await transfer(client, server, 1, src, dst)
        captured = b"\n".join(d for _, d in relays[0].captured)
    assert sha256(dst) == sha256(src)
    assert len(captured) > len(data)
    windows = {data[i : i + 64] for i in range(0, len(data) - 64, 61)}  # windows overlapping every datagram
    assert not any(w in captured for w in windows)


@aio
async def test_plaintext_visible_without_encryption(tmp_path):
    """The eavesdropping check above can fail: with -T the same capture does show the file."""
    data = os.urandom(200_000)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    async with AsyncExitStack() as stack:
        via, relays = await _through(stack, capture=True)
        async with pair(key=CLEAR, via=via) as (client, server):
            await transfer(client, server, 1, src, dst)
        captured = b"".join(d for _, d in relays[0].captured)
    assert data[:64] in captured
    assert sha256(dst) == sha256(src)


@aio
async def test_a_stamped_relay_dates_each_datagram_when_it_was_sent_however_late_it_reads_it():
    """The pacing tests measure a sender's rate by ``sent_at`` (test_transport_control, test_relayed_options): a
    relay whose loop was held (a loaded host) still tells when each datagram went, not when it got to it."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    dated: list[float] = []
    sent: list[tuple[float, float]] = []  # (just before the send, just after)
    try:
        async with Relay(target=sink.getsockname(), stamped=True) as relay:
            relay.tamper = lambda data, direction: dated.append(relay.sent_at) or []
            await asyncio.sleep(0.1)  # the kernel turns timestamps on a moment after the first socket asks
            for _ in range(2):
                before = time.monotonic()
                client.sendto(b"x", ("127.0.0.1", relay.port))
                sent.append((before, time.monotonic()))
                time.sleep(0.2)  # the relay's loop is held: it reads the first 0.4 s late, the second 0.2 s
            while len(dated) < 2:
                await asyncio.sleep(0.01)
    finally:
        sink.close()
        client.close()
    slack = 0.002  # the real-time clock against the monotonic one, read apart
    assert all(lo - slack <= at <= hi + slack for at, (lo, hi) in zip(dated, sent)), (dated, sent)
