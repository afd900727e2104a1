"""The compiled batch path (fasp/datapath/_fastpath.c) against the pure-Python one: same datagrams sealed,
received and opened, a transfer through each, and the fallback when the extension is absent. The extension is
built by ``pip install -e .`` or ``python setup.py build_ext --inplace`` (a C compiler and libssl-dev); a missing
build fails here rather than going unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from fasp.datapath import _fastpath, datagram
from fasp.datapath.seal import WIRE, Seal
from fasp.datapath.udpsocket import RECV_MESSAGES, SOL_UDP, UDP_GRO, UdpSocket
from tests.support.files import sha256

from .conftest import CLEAR, aio, pair as transports, session_key, transfer

SID = b"f" * 16
KEYS = [session_key(16), session_key(24), session_key(32), CLEAR]


def pair(key_index: int, direction: int, seq: int) -> tuple[Seal, Seal]:
    compiled, pure = Seal(SID, KEYS[key_index], direction), Seal(SID, KEYS[key_index], direction)
    compiled.fastpath, pure.fastpath = _fastpath, None
    compiled._seq = pure._seq = seq
    return compiled, pure


@settings(max_examples=200, deadline=None)
@given(
    key_index=st.integers(0, len(KEYS) - 1),
    direction=st.integers(0, 1),
    seq=st.integers(0, 2**40),
    file_id=st.integers(0, 2**32 - 1),
    base=st.integers(0, datagram.MAX_OFFSET - 5001),
    block=st.binary(max_size=5000),
    cuts=st.lists(st.integers(0, 5000), max_size=8),
)
def test_compiled_and_pure_paths_seal_the_same_datagrams(key_index, direction, seq, file_id, base, block, cuts):
    """Any run of a file at any offset (48 bits), any datagram count (the low 32 bits wrap)."""
    edges = sorted({0, len(block), *(c for c in cuts if c <= len(block))})
    runs = [(base + lo, hi - lo) for lo, hi in zip(edges, edges[1:])] or [(base, 0)]  # a zero-length probe too
    compiled, pure = pair(key_index, direction, seq)
    sealed = compiled.seal_data(file_id, base, memoryview(block), runs)
    assert sealed == pure.seal_data(file_id, base, memoryview(block), runs)
    assert compiled._seq == pure._seq == seq + len(runs)
    # and the peer opens each as the DATA datagram it should be
    opener = Seal(SID, KEYS[key_index], 1 - direction)
    if seq:
        opener.replay.mark(seq - 1)  # it has accepted the datagram before these: their full seq is restored
    for (off, n), packet in zip(runs, sealed):
        type_, got_seq, _, _, body = opener.open(packet)
        assert (type_, got_seq) == (datagram.DATA, seq + runs.index((off, n)))
        got_id, got_off, payload = datagram.parse_data(body)
        assert (got_id, got_off, bytes(payload)) == (file_id, off, block[off - base : off - base + n])


@settings(max_examples=200, deadline=None)
@given(
    key_index=st.integers(0, len(KEYS) - 1),
    bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    picks=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["as sent", "flip", "cut", "foreign", "reflected", "garbage"])),
        max_size=24,
    ),
    garbage=st.binary(max_size=80),
    start=st.sampled_from([0, 1, 2**31, 2**32 - 3, 2**32, 5 * 2**32 - 2]),
    direction=st.integers(0, 1),
)
def test_compiled_and_pure_paths_open_the_same(key_index, bodies, picks, garbage, start, direction):
    """A received batch of authentic, replayed, damaged, foreign, reflected and garbage datagrams, numbered
    from ``start`` (across a wrap of the low 32 bits on the wire)."""
    key = KEYS[key_index]
    sender = Seal(SID, key, direction)
    sender._seq = start
    sent = [sender.seal(datagram.DATA if i % 2 else datagram.FEEDBACK, b, i, 7) for i, b in enumerate(bodies)]
    reflected = Seal(SID, key, 1 - direction).seal(datagram.DATA, b"mirror", 0, 0)
    foreign = Seal(b"x" * 16, key, direction).seal(datagram.DATA, b"other session", 0, 0)
    batch: list[bytes] = []
    for index, how in picks or [(0, "as sent")]:
        packet = sent[index % len(sent)]
        if how == "flip":
            packet = packet[:-1] + bytes([packet[-1] ^ 1])
        elif how == "cut":
            packet = packet[: len(packet) // 2]
        batch.append({"foreign": foreign, "reflected": reflected, "garbage": garbage}.get(how, packet))
    compiled, pure = Seal(SID, key, 1 - direction), Seal(SID, key, 1 - direction)
    compiled.fastpath, pure.fastpath = _fastpath, None
    if start:
        compiled.replay.mark(start - 1)
        pure.replay.mark(start - 1)
    opened = compiled.open_batch([memoryview(p) for p in batch])
    assert opened == pure.open_batch(batch)
    assert compiled.replay.high == pure.replay.high
    assert [o[4] for o in opened if o is not None] == [  # each authentic datagram once, its body intact
        bodies[i] for i in dict.fromkeys(sent.index(p) for p in batch if p in sent)
    ]


def _drain(sock: UdpSocket) -> list[list[tuple[bytes, tuple]]]:
    """Each recv_batch call's datagrams (as bytes) and sources, until the socket is empty."""
    calls = []
    while got := sock.recv_batch():
        calls.append([(bytes(data), addr) for data, addr in got])
    return calls


@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_compiled_and_pure_paths_receive_and_open_the_same(host, gro):
    """The same datagrams into a socket read with one recvmmsg per call and one read with a recvmsg per message:
    the same batches (more messages than one call reads, GRO buffers split, empty ones) from the same source
    address, and the same opened or dropped (forged, cut, empty, foreign, reflected, replayed)."""
    key = KEYS[0]
    sender = Seal(SID, key, 0)
    bodies = [bytes([i]) * (i % 7 * 50) for i in range(140)]
    authentic = [sender.seal(datagram.DATA if i % 3 else datagram.FEEDBACK, b, i, 9) for i, b in enumerate(bodies)]
    flipped = authentic[5][:-1] + bytes([authentic[5][-1] ^ 1])
    foreign = Seal(b"x" * 16, key, 0).seal(datagram.DATA, b"other session", 0, 0)
    reflected = Seal(SID, key, 1).seal(datagram.DATA, b"mirror", 0, 0)
    singles = [*authentic[:100], flipped, authentic[7][:20], b"", foreign, reflected, authentic[3], *authentic[100:140]]
    run = [sender.seal(datagram.DATA, b"r" * 1000, 0, 0) for _ in range(20)]  # equal sizes: one GSO send
    bodies += [b"r" * 1000] * len(run)
    compiled, pure = UdpSocket.bind(host, 0), UdpSocket.bind(host, 0)
    source = UdpSocket.bind(host, 0)
    try:
        assert compiled.fastpath is _fastpath
        pure.fastpath = None
        for sock in (compiled, pure):
            sock.sock.setsockopt(SOL_UDP, UDP_GRO, int(gro))
            for packet in singles:
                source.sock.sendto(packet, (host, sock.port))
            assert source.send_batch(run, (host, sock.port)) == len(run)
        time.sleep(0.2)
        got, expected = _drain(compiled), _drain(pure)
        assert got == expected
        assert len(got[0]) == RECV_MESSAGES  # one call reads no more
        assert {addr for call in got for _, addr in call} == {(host, source.port, 0, 0)[: 2 if "." in host else 4]}
        received = [data for call in got for data, _ in call]
        assert received == singles + run  # in order, each GRO buffer's datagrams apart
        opener, pure_opener = Seal(SID, key, 1), Seal(SID, key, 1)
        pure_opener.fastpath = None
        opened = [opener.open_batch([data for data, _ in call]) for call in got]
        assert opened == [pure_opener.open_batch([data for data, _ in call]) for call in expected]
        # every authentic datagram once; not the forged, cut, empty, foreign, reflected or replayed ones
        assert [o[4] for batch in opened for o in batch if o is not None] == bodies
    finally:
        for sock in (compiled, pure, source):
            sock.close()


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
@aio
async def test_a_transfer_arrives_intact_through_each_receive_path(tmp_path, compiled):
    """A datagram per message (no GRO, as across a path that does not coalesce), read by each path."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(os.urandom(3 << 20))
    async with transports() as (client, server):
        sock = server._sock
        sock.sock.setsockopt(SOL_UDP, UDP_GRO, 0)
        if not compiled:
            sock.fastpath = None
        await transfer(client, server, 1, src, dst)
        assert (sock.fastpath is _fastpath) is compiled
    assert dst.stat().st_size == 3 << 20
    assert sha256(dst) == sha256(src)


def test_a_run_outside_the_block_or_the_wire_is_refused():
    compiled, _ = pair(0, 0, 0)
    for base, block, runs in (
        (5, b"0123", [(9, 2)]),
        (5, b"0123", [(4, 0)]),
        (5, b"0123", [(10, 1 << 33)]),
        (datagram.MAX_OFFSET, b"0123", [(datagram.MAX_OFFSET, 1)]),  # offsets have 48 bits
        (0, bytes(1 << 17), [(0, 1 << 17)]),  # more than a datagram holds
    ):
        try:
            compiled.seal_data(1, base, block, runs)
        except ValueError:
            continue
        raise AssertionError(f"{runs} accepted")


def test_the_pure_path_is_used_when_the_extension_is_absent_or_disabled():
    probe = (
        "from fasp.datapath import seal, udpsocket; "
        "print(seal.FASTPATH is None, seal.Seal(b's' * 16, seal.SessionKey(bytes(32)), 0).fastpath is None, "
        "udpsocket.UdpSocket.bind('127.0.0.1', 0).fastpath is None)"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {key: value for key, value in os.environ.items() if key != "FASP_NO_FASTPATH"} | {"PYTHONPATH": root}
    disabled = subprocess.run(
        [sys.executable, "-c", probe], env={**env, "FASP_NO_FASTPATH": "1"}, capture_output=True, text=True, check=True
    )
    assert disabled.stdout.split() == ["True", "True", "True"]
    blocked = "import sys; sys.modules['fasp.datapath._fastpath'] = None; " + probe  # an import that fails
    absent = subprocess.run([sys.executable, "-c", blocked], env=env, capture_output=True, text=True, check=True)
    assert absent.stdout.split() == ["True", "True", "True"]
    stale = (  # a build for wire version 1 left in the tree
        "import sys, types; sys.modules['fasp.datapath._fastpath'] = types.SimpleNamespace(WIRE=(1, 36, 36, 16, 16)); "
        + probe
    )
    old = subprocess.run([sys.executable, "-c", stale], env=env, capture_output=True, text=True, check=True)
    assert old.stdout.split() == ["True", "True", "True"]
    assert _fastpath.WIRE == WIRE  # and this build is for the wire datagram.py defines
    present = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert present.stdout.split() == ["False", "False", "False"]
