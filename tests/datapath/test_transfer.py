"""Whole transfers between two real Transports over loopback UDP."""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import AsyncExitStack

import pytest

from fasp.datapath import pmtu
from fasp.datapath.rate import RateSettings
from fasp.datapath.udpchannel import INLINE_WRITE
from faspmanager.codes import EngineError
from tests.support.files import sha256
from tests.support.relay import Relay

from .conftest import CLEAR, aio, pair, session_key, transfer

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("size", [0, 1, 10 << 20])
@pytest.mark.parametrize("key", [session_key(16), CLEAR], ids=["aes", "clear"])
@aio
async def test_file_arrives_intact(tmp_path, size, key):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(size))
    async with pair(key=key) as (client, server):
        await transfer(client, server, 7, src, dst)
        assert client.stats()["bytes_sent"] >= size
        assert server.stats()["bytes_received"] == size
    assert dst.stat().st_size == size
    assert sha256(dst) == sha256(src)


@aio
async def test_partial_range_lands_at_its_offsets(tmp_path):
    data = os.urandom(3 << 20)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    start, end = 1_000_003, 2_500_017
    async with pair() as (client, server):
        await transfer(client, server, 1, src, dst, start, end)
        assert server.stats()["bytes_received"] == end - start
    got = dst.read_bytes()
    assert len(got) == end
    assert got[start:end] == data[start:end]
    assert hashlib.sha256(got[start:end]).digest() == hashlib.sha256(data[start:end]).digest()
    assert got[:start] == bytes(start)  # nothing written outside the range


@aio
async def test_bytes_like_source(tmp_path):
    data = bytearray(os.urandom(500_000))
    dst = tmp_path / "dst"
    fd = os.open(dst, os.O_RDWR | os.O_CREAT)
    try:
        async with pair() as (client, server):
            rx = asyncio.ensure_future(server.receive(3, fd, 100, 100 + len(data)))
            await asyncio.wait_for(client.send(3, memoryview(data), 100, 100 + len(data)), 20)
            await asyncio.wait_for(rx, 5)
    finally:
        os.close(fd)
    got = dst.read_bytes()
    assert len(got) == 100 + len(data)
    assert hashlib.sha256(got[100:]).hexdigest() == hashlib.sha256(data).hexdigest()


@aio
async def test_many_concurrent_small_files_both_directions(tmp_path):
    sizes = [0, 1, 17, 1336, 1337, 4000, 65_537] * 6
    blobs = [os.urandom(n) for n in sizes]
    progress = {}
    async with pair() as (client, server):
        fds = [os.open(tmp_path / f"f{i}", os.O_RDWR | os.O_CREAT) for i in range(len(blobs))]
        try:

            async def one(i):
                a, b = (client, server) if i % 2 else (server, client)  # either end can send
                rx = asyncio.ensure_future(
                    b.receive(
                        i,
                        fds[i],
                        0,
                        len(blobs[i]),
                        on_progress=lambda n, i=i: progress.__setitem__(i, progress.get(i, 0) + n),
                    )
                )
                await a.send(i, blobs[i], 0, len(blobs[i]))
                await rx

            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(len(blobs)))), 30)
        finally:
            for fd in fds:
                os.close(fd)
    for i, blob in enumerate(blobs):
        path = tmp_path / f"f{i}"
        assert path.stat().st_size == len(blob)
        assert sha256(path) == hashlib.sha256(blob).hexdigest()
        assert progress.get(i, 0) == len(blob)


@aio
async def test_plain_sendto_recvfrom_fallback(tmp_path, monkeypatch):
    """Without GSO/GRO (older kernels) the same transfer works one datagram per system call."""
    from fasp.datapath import udpsocket

    monkeypatch.setattr(udpsocket.UdpSocket, "_probe_gso", lambda self: False)
    monkeypatch.setattr(udpsocket, "UDP_GRO", -1)  # setsockopt fails: no GRO
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(3 << 20))
    async with pair() as (client, server):
        assert not client._sock.gso and not server._sock.gro
        await transfer(client, server, 1, src, dst)
    assert sha256(dst) == sha256(src)


@pytest.mark.parametrize("size", [296, 9000, 65000])
@aio
async def test_datagram_sizes(tmp_path, size):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(2 << 20))
    captured = []
    async with AsyncExitStack() as stack:

        async def via(port):
            relay = await stack.enter_async_context(Relay(target=("127.0.0.1", port), capture=True))
            captured.append(relay.captured)
            return relay.port

        async with pair(datagram_size=size, via=via) as (client, server):
            await transfer(client, server, 1, src, dst)
            assert client.stats()["datagrams_sent"] >= (2 << 20) / size
    assert sha256(dst) == sha256(src)
    assert max(len(d) for _, d in captured[0]) <= size  # feedback too stays within the datagram size


@pytest.mark.parametrize(("kbps", "largest"), [(2_000_000, pmtu.MAX_DATAGRAM), (8_000, pmtu.ETHERNET)])
@aio
async def test_loopback_discovers_the_largest_datagram_the_rate_is_worth(tmp_path, kbps, largest):
    """The kernel's loopback route carries 64 KiB datagrams: discovery (-Z 0) at 2 Gbit/s sends DATA of 65,507
    bytes there (a jumbo frame's 8,972 is only the blind search's ceiling); at 8 Mbit/s, of an Ethernet frame's
    (a 64 KiB one would be 65 ms of pacing). The file arrives whole either way."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(8 << 20 if largest > pmtu.JUMBO else 1 << 20))
    async with pair(datagram_size=0, rate=RateSettings(kbps, policy="fixed")) as (client, server):
        await transfer(client, server, 1, src, dst)
        stats = client.stats()
        assert stats["datagram_size"] == largest
        full = src.stat().st_size / largest  # DATA datagrams, were every one of the largest size
        assert full <= stats["datagrams_sent"] < 2 * full, stats["datagrams_sent"]
    assert sha256(dst) == sha256(src) and dst.stat().st_size == src.stat().st_size


@aio
async def test_write_failure_fails_that_receive_with_36_only(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    bad.write_bytes(b"")
    data = os.urandom(200_000)
    async with pair() as (client, server):
        ro = os.open(bad, os.O_RDONLY)  # pwrite fails with EBADF
        rw = os.open(good, os.O_RDWR | os.O_CREAT)
        try:
            rx_bad = asyncio.ensure_future(server.receive(1, ro, 0, len(data)))
            rx_good = asyncio.ensure_future(server.receive(2, rw, 0, len(data)))
            await asyncio.wait_for(client.send(2, data, 0, len(data)), 20)
            await asyncio.wait_for(rx_good, 5)
            tx_bad = asyncio.ensure_future(client.send(1, data, 0, len(data)))
            with pytest.raises(EngineError) as err:
                await asyncio.wait_for(rx_bad, 10)
            assert err.value.code == 36
            tx_bad.cancel()
        finally:
            os.close(ro)
            os.close(rw)
    assert hashlib.sha256(good.read_bytes()).digest() == hashlib.sha256(data).digest()


@aio
async def test_progress_callback_failure_fails_only_that_receive(tmp_path):
    data = os.urandom(100_000)

    def boom(n):
        raise RuntimeError("caller bug")

    async with pair() as (client, server):
        fd = os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT)
        try:
            rx = asyncio.ensure_future(server.receive(1, fd, 0, len(data), on_progress=boom))
            tx = asyncio.ensure_future(client.send(1, data, 0, len(data)))
            with pytest.raises(RuntimeError):
                await asyncio.wait_for(rx, 10)
            tx.cancel()
            await asyncio.gather(tx, return_exceptions=True)
            rx2 = asyncio.ensure_future(server.receive(2, fd, 0, len(data)))
            await asyncio.wait_for(client.send(2, data, 0, len(data)), 10)
            await asyncio.wait_for(rx2, 5)
        finally:
            os.close(fd)
    assert (tmp_path / "dst").read_bytes() == data


@pytest.mark.parametrize("policy", ["fixed", "high", "fair", "low"])
@aio
async def test_every_policy_delivers(tmp_path, policy):
    from fasp.datapath.udpchannel import RateSettings

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(2 << 20))
    async with pair(rate=RateSettings(200_000, min_kbps=1000, policy=policy)) as (client, server):
        await transfer(client, server, 1, src, dst)
        stats = client.stats()
        assert stats["policy"] == policy and 1000 <= stats["rate_kbps"] <= 200_000
    assert sha256(dst) == sha256(src)


@aio
async def test_whole_receive_lands_with_one_write_despite_loss_and_reordering(tmp_path, monkeypatch):
    """receive(whole=True) (a small file's only piece): however the datagrams arrive, the bytes land with
    ONE write once all arrived, so the destination never holds a hole (why such a file needs no sidecar)."""
    import fasp.datapath.udpchannel

    data = os.urandom(200_000)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(bytes(1000) + data)
    writes = []
    real_pwrite = os.pwrite

    def pwrite(fd, payload, offset):
        done = real_pwrite(fd, payload, offset)
        writes.append((offset, len(payload)))  # after: the loop below sees a write only once it is whole
        return done

    monkeypatch.setattr(fasp.datapath.udpchannel.os, "pwrite", pwrite)
    async with AsyncExitStack() as stack:

        async def via(port):
            relay = Relay(target=("127.0.0.1", port), loss=0.1, reorder=0.1, duplicate=0.05, seed=3)
            return (await stack.enter_async_context(relay)).port

        async with pair(via=via) as (client, server):
            fd_src, fd_dst = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDWR | os.O_CREAT)
            try:
                rx = asyncio.ensure_future(server.receive(5, fd_dst, 1000, 1000 + len(data), whole=True))
                await asyncio.sleep(0)
                send = asyncio.ensure_future(client.send(5, fd_src, 1000, 1000 + len(data)))
                while not rx.done():  # until the end, nothing at all was written (then the one write, then done)
                    assert writes in ([], [(1000, len(data))])
                    await asyncio.wait([rx], timeout=0.002)
                await rx
                await asyncio.wait_for(send, 20)
            finally:
                os.close(fd_src)
                os.close(fd_dst)
    assert writes == [(1000, len(data))]
    assert dst.read_bytes() == bytes(1000) + data


@aio
async def test_a_small_whole_piece_is_written_on_the_loop_and_a_large_one_by_the_writer(tmp_path):
    """A small file lands as one write once all of it arrived (``whole``). Up to INLINE_WRITE that write is made on
    the loop: for 8 KiB, handing it to the writer thread and hearing back cost more than the copy. A failed inline
    write fails that file with 36 as the writer's would; a larger whole piece still goes to the writer."""
    small, large = os.urandom(8192), os.urandom(INLINE_WRITE + 1)
    bad = tmp_path / "bad"
    bad.write_bytes(b"")
    async with pair() as (client, server):
        fds = [os.open(tmp_path / "small", os.O_RDWR | os.O_CREAT), os.open(bad, os.O_RDONLY)]
        try:
            rx = asyncio.ensure_future(server.receive(1, fds[0], 0, len(small), whole=True))
            await asyncio.wait_for(client.send(1, small, 0, len(small)), 10)
            await asyncio.wait_for(rx, 5)
            assert server._writer._thread is None  # no thread was started for it
            rx_bad = asyncio.ensure_future(server.receive(2, fds[1], 0, len(small), whole=True))  # EBADF
            tx_bad = asyncio.ensure_future(client.send(2, small, 0, len(small)))
            with pytest.raises(EngineError) as err:
                await asyncio.wait_for(rx_bad, 10)
            assert err.value.code == 36 and server._writer._thread is None
            tx_bad.cancel()
            await asyncio.gather(tx_bad, return_exceptions=True)
            fds.append(os.open(tmp_path / "large", os.O_RDWR | os.O_CREAT))
            rx = asyncio.ensure_future(server.receive(3, fds[2], 0, len(large), whole=True))
            await asyncio.wait_for(client.send(3, large, 0, len(large)), 10)
            await asyncio.wait_for(rx, 5)
            assert server._writer._thread is not None
        finally:
            for fd in fds:
                os.close(fd)
    assert (tmp_path / "small").read_bytes() == small and (tmp_path / "large").read_bytes() == large
