"""-g, -G and -X in the data path: Transport.tune on two real Transports, the system calls they make
(os.pread/os.pwrite recorded) and the FEEDBACK bodies the receiver builds."""

from __future__ import annotations

import os
import random
import time

import pytest
from hypothesis import given, settings, strategies as st

from fasp.datapath import datagram
from fasp.datapath.rate import RateSettings
from fasp.datapath.recvstate import MAX_FEEDBACK_BYTES, MIN_FEEDBACK_BYTES, ReceiveState, feedback_limit
from tests.datapath.conftest import aio, pair, transfer
from tests.support.files import sha256
from tests.support.relay import Relay


@pytest.fixture
def syscalls(monkeypatch):
    """Every os.pread/os.pwrite as (fd, size), from any thread."""
    seen = {"pread": [], "pwrite": []}
    real_pread, real_pwrite = os.pread, os.pwrite

    def pread(fd, n, offset):
        seen["pread"].append((fd, n))
        return real_pread(fd, n, offset)

    def pwrite(fd, data, offset):
        seen["pwrite"].append((fd, len(data)))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pread", pread)
    monkeypatch.setattr(os, "pwrite", pwrite)
    return seen


def test_feedback_limit_is_x_within_the_datagram_and_never_below_one_range():
    room = 1400 - datagram.CONTROL_HEADER_SIZE - datagram.TAG_SIZE
    assert feedback_limit(room) == MAX_FEEDBACK_BYTES
    assert feedback_limit(room, 100) == 100
    assert feedback_limit(room, 1) == MIN_FEEDBACK_BYTES == 47
    assert feedback_limit(room, 1 << 30) == room
    assert feedback_limit(200, 0) == 200


@settings(max_examples=60, deadline=None)
@given(cap=st.integers(MIN_FEEDBACK_BYTES, 1400), files=st.integers(1, 6), seed=st.integers(0, 1000))
def test_feedback_bodies_fit_the_cap_and_carry_a_range(cap, files, seed):
    rnd = random.Random(seed)
    r = ReceiveState(cap)
    for fid in range(1, files + 1):
        r.register(fid, 0, 1 << 20)
        for off in range(0, 1 << 19, 1000):
            if rnd.random() > 0.2:  # 20 % lost: holes everywhere
                r.on_data(fid, off, 1000, 0.0)
    fb = r.feedback(1.0, 0.01)
    body = datagram.pack_feedback(fb)
    assert len(body) <= cap
    assert any(f.holes for f in fb.files)
    assert datagram.parse_feedback(body) == fb


async def _tuned_transfer(tmp_path, size: int, *, read_size=0, write_size=0, x=None, relay_kw=None, rate=None):
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(os.urandom(size))
    seen = []
    relays = []

    async def via(port):
        relay = Relay(
            target=("127.0.0.1", port),
            tamper=lambda d, w: (seen.append((w, datagram.kind(d), len(d))), [d])[1],
            seed=3,
            **(relay_kw or {}),
        )
        relays.append(await relay.__aenter__())
        return relay.port

    try:
        async with pair(via=via, rate=rate) as (client, server):
            client.tune(read_size=read_size)
            server.tune(write_size=write_size, retransmission_max=x)
            await transfer(client, server, 1, src, dst)
    finally:
        for relay in relays:
            await relay.__aexit__(None, None, None)
    assert sha256(src) == sha256(dst)
    return seen


@pytest.mark.parametrize("read_size,write_size", [(65536, 1 << 20), (1 << 20, 16384)])
@aio
async def test_reads_are_whole_g_blocks_and_writes_up_to_g(tmp_path, syscalls, read_size, write_size):
    size = 4 << 20
    await _tuned_transfer(tmp_path, size, read_size=read_size, write_size=write_size)
    reads = [n for _, n in syscalls["pread"]]
    writes = [n for _, n in syscalls["pwrite"]]
    assert max(reads) == read_size and sum(n for n in reads if n == read_size) >= size - read_size
    assert max(writes) <= write_size and sum(n for n in writes if n == write_size) >= size // 2


@aio
async def test_writes_stay_within_g_through_loss_and_reordering(tmp_path, syscalls):
    """Gaps cut blocks short (a resend fills a hole elsewhere), never make them longer."""
    await _tuned_transfer(tmp_path, 2 << 20, write_size=100_000, relay_kw=dict(loss=0.03, reorder=0.05))
    assert max(n for _, n in syscalls["pwrite"]) <= 100_000


@pytest.mark.slow
@aio
async def test_a_partly_filled_block_is_written_after_flush_age(tmp_path, syscalls):
    """At 2 Mbit/s a 1 MiB -G block would hold 300 KB back until the end: it is written every FLUSH_AGE."""
    started = time.monotonic()
    await _tuned_transfer(tmp_path, 300_000, write_size=1 << 20, rate=RateSettings(2000, policy="fixed"))
    assert time.monotonic() - started > 1.0
    assert len(syscalls["pwrite"]) >= 2


@aio
async def test_feedback_on_the_wire_stays_within_x(tmp_path):
    """ReceiveState -> sender datagrams through a lossy relay: FEEDBACK is at most X + header + tag."""
    limited = await _tuned_transfer(tmp_path, 2 << 20, x=100, relay_kw=dict(loss=0.05))
    free = await _tuned_transfer(tmp_path, 2 << 20, relay_kw=dict(loss=0.05))
    overhead = datagram.CONTROL_HEADER_SIZE + datagram.TAG_SIZE

    def feedback(seen):  # the client sends, so the server's feedback travels "down"
        return [n for way, kind, n in seen if way == "down" and kind == datagram.FEEDBACK]

    assert max(feedback(limited)) <= 100 + overhead
    assert max(feedback(limited)) >= MIN_FEEDBACK_BYTES + overhead
    assert max(feedback(free)) > 100 + overhead
