"""Datagram codec and sealing: round trips, garbage never crashes, tampering and replays are rejected."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

from fasp.datapath import datagram
from fasp.datapath.seal import Rejected, ReplayWindow, Seal

from .conftest import CLEAR, session_key

SID = b"s" * 16
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


@given(
    type_=st.sampled_from(sorted(datagram.TYPES)),
    direction=st.integers(0, 1),
    cid=st.binary(min_size=datagram.CID_SIZE, max_size=datagram.CID_SIZE),
    seq=u64,
    ts=u32,
    echo=u32,
)
def test_header_round_trip(type_, direction, cid, seq, ts, echo):
    """The header carries seq's low 32 bits, and ts and the echo in every type but DATA."""
    header = datagram.pack_header(type_, direction, cid, seq, ts, echo)
    assert len(header) == datagram.header_size(type_)
    h = datagram.parse_header(header + bytes(datagram.TAG_SIZE))
    clocks = (0, 0) if type_ == datagram.DATA else (ts, echo)
    assert h == (type_, direction, cid, seq & 0xFFFFFFFF, *clocks)
    assert datagram.kind(header) == type_


@given(file_id=u32, offset=st.integers(0, 2**48 - 3000), payload=st.binary(max_size=3000))
def test_data_round_trip(file_id, offset, payload):
    assert datagram.parse_data(datagram.pack_data(file_id, offset, payload)) == (file_id, offset, payload)


@given(actual=st.integers(0, 2**63), drift=st.integers(-(2**31) + 1, 2**31 - 1))
def test_full_sequence_number_is_the_one_nearest_the_expected(actual, drift):
    expected = max(0, actual + drift)
    assert datagram.full_seq(actual & 0xFFFFFFFF, expected) == actual


def test_a_data_datagram_at_a_1500_byte_mtu_is_95_9_percent_file_bytes():
    """What a 1,500-byte MTU link carries per DATA datagram (IPv4 + UDP headers, 1,472 bytes of UDP payload,
    the default size once discovered), measured on datagrams the real Seal made, with and without -T."""
    mtu, ip_udp = 1500, 28
    payload = os.urandom(mtu - ip_udp - datagram.DATA_OVERHEAD)
    for key in (session_key(16), session_key(32), CLEAR):
        sealed = Seal(SID, key, 0).seal(datagram.DATA, datagram.pack_data(7, 2**40, payload), 1, 2)
        assert len(sealed) + ip_udp == mtu
        assert Seal(SID, key, 1).open(sealed)[4][datagram.DATA_HEAD.size :] == payload
        overhead = mtu - len(payload)
        assert overhead == 61 and len(payload) / mtu >= 0.959, (overhead, len(payload) / mtu)


holes = st.lists(st.integers(0, 2**40), unique=True, max_size=10).map(
    lambda ps: [(a, b) for a, b in zip(sorted(ps)[::2], sorted(ps)[1::2])]
)
reports = st.builds(
    lambda fid, hs, extra, done: datagram.FileReport(fid, (hs[-1][1] if hs else 0) + extra, hs, done),
    u32,
    holes,
    st.integers(0, 2**30),
    st.booleans(),
)


@given(rate=u32, loss=st.integers(0, 65535), files=st.lists(reports, max_size=6), data_seq=u32, data_age=u32)
def test_feedback_round_trip(rate, loss, files, data_seq, data_age):
    fb = datagram.Feedback(rate, loss / 65535, files, data_seq, data_age)
    back = datagram.parse_feedback(datagram.pack_feedback(fb))
    assert (back.recv_rate_kbps, back.files, back.data_seq, back.data_age) == (rate, files, data_seq, data_age)
    assert abs(back.loss - fb.loss) < 1e-9


@given(st.binary(max_size=300))
def test_garbage_never_crashes_the_codecs(data):
    for parse in (
        datagram.parse_header,
        datagram.parse_data,
        datagram.parse_feedback,
        datagram.parse_hello,
        datagram.parse_close,
    ):
        try:
            parse(data)
        except datagram.WireError:
            pass


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_garbage_is_rejected_by_the_opener(data):
    with pytest.raises(Rejected):
        Seal(SID, session_key(16), 1).open(data)


@pytest.mark.parametrize("key", [session_key(16), session_key(24), session_key(32), CLEAR])
def test_seal_round_trip_and_every_bit_flip_rejected(key):
    a, b = Seal(SID, key, 0), Seal(SID, key, 1)
    body = datagram.pack_data(9, 1234, b"hello world" * 10)
    d = a.seal(datagram.DATA, body, 5, 6)
    for bit in range(0, len(d) * 8, 7):
        bad = bytearray(d)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(Rejected):
            b.open(bytes(bad))
    type_, seq, ts, echo, got = b.open(d)
    assert got == body and (type_, ts, echo, seq) == (datagram.DATA, 0, 0, 0)  # DATA carries no ts nor echo
    assert b.open(a.seal(datagram.FEEDBACK, b"fb", 7, 8)) == (datagram.FEEDBACK, 1, 7, 8, b"fb")
    with pytest.raises(Rejected):  # replay
        b.open(d)
    with pytest.raises(Rejected):  # reflected back to its sender
        a.open(a.seal(datagram.DATA, body, 0, 0))
    assert (b"hello world" in d) == (key.key_bytes == 0)


def test_wrong_key_or_session_rejected():
    d = Seal(SID, session_key(16), 0).seal(datagram.FEEDBACK, b"x", 0, 0)
    for opener in (Seal(SID, session_key(16, b"j"), 1), Seal(b"t" * 16, session_key(16), 1), Seal(SID, CLEAR, 1)):
        with pytest.raises(Rejected):
            opener.open(d)


def test_sequence_numbers_carry_on_past_32_bits_and_old_datagrams_stay_rejected():
    """The header holds seq's low 32 bits: across the wrap the opener restores the full number (the nonce),
    and a datagram from 2**32 datagrams earlier, whose low bits match a new one's, fails authentication."""
    a, b = Seal(SID, session_key(16), 0), Seal(SID, session_key(16), 1)
    early = a.seal(datagram.DATA, b"early", 0, 0)
    assert b.open(early)[1] == 0
    a._seq = 2**32 - 2  # as if 2**32 - 3 more had gone (sealing them all would take an hour)
    seqs = [b.open(a.seal(datagram.DATA, b"x", 0, 0))[1] for _ in range(2)]
    with pytest.raises(Rejected, match="authentication"):  # its low bits 0 mean 2**32 now, not 0
        b.open(early)
    seqs += [b.open(a.seal(datagram.DATA, b"x", 0, 0))[1] for _ in range(2)]
    assert seqs == [2**32 - 2, 2**32 - 1, 2**32, 2**32 + 1]
    with pytest.raises(Rejected, match="replayed"):
        b.open(early)


def test_nonces_never_repeat_across_directions():
    a, b = Seal(SID, session_key(16), 0), Seal(SID, session_key(16), 1)
    nonces = set()
    for s in (a, b):
        for _ in range(1000):
            _, direction, _, seq, _, _ = datagram.parse_header(s.seal(datagram.DATA, b"", 0, 0))
            nonces.add((direction, seq))
    assert len(nonces) == 2000


@given(st.lists(st.integers(0, 5000), max_size=400))
def test_replay_window_matches_a_model(seqs):
    """Accept a sequence number iff never accepted before and within `size` of the highest accepted."""
    w, size = ReplayWindow(size=256), 256
    accepted: set[int] = set()
    for s in seqs:
        expect = s not in accepted and (not accepted or s > max(accepted) - size)
        assert w.fresh(s) == expect
        if expect:
            w.mark(s)
            accepted.add(s)


def test_replay_window_slides():
    w = ReplayWindow(size=8)
    for s in (0, 1, 5, 20):
        w.mark(s)
    assert not w.fresh(20) and not w.fresh(12) and w.fresh(13) and w.fresh(19) and w.fresh(21)
    w.mark(30)
    assert not w.fresh(22) and w.fresh(23) and not w.fresh(30)


@pytest.mark.parametrize("key", [session_key(32, os.urandom(1)), CLEAR])
def test_big_datagram_round_trip(key):
    a, b = Seal(SID, key, 0), Seal(SID, key, 1)
    body = datagram.pack_data(1, 0, os.urandom(60000))
    assert b.open(a.seal(datagram.DATA, body, 0, 0))[4] == body
