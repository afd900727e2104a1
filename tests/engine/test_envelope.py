"""The content-protection envelope format (fasp/files/envelope.py), without a transfer: fast unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fasp.files import envelope
from fasp.files.envelope import (
    BLOCK,
    HEADER,
    STREAMED,
    SUFFIX,
    TAG,
    Envelope,
    SealedSource,
    StreamSealer,
    open_in_place,
    sealed_size,
)
from faspmanager.codes import EngineError

PASS = "correct horse"
_KEYS: dict = {}


def _envelope(plain_size: int, block: int) -> Envelope:
    """One salt per (size, block): scrypt is deliberately slow, hypothesis runs many examples."""
    key = (plain_size, block)
    if key not in _KEYS:
        _KEYS[key] = (os.urandom(16), os.urandom(8))
    salt, prefix = _KEYS[key]
    return Envelope(PASS, salt, prefix, plain_size, block)


def _seal(tmp_path, data: bytes, block: int) -> tuple[Envelope, bytes]:
    src = tmp_path / "plain.bin"
    src.write_bytes(data)
    env = _envelope(len(data), block)
    fd = os.open(src, os.O_RDONLY)
    try:
        sealed = SealedSource(fd, len(data), env)
        return env, sealed.read(sealed.size, 0)
    finally:
        os.close(fd)


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=700),
    block=st.sampled_from([16, 17, 64, 100]),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
)
def test_any_ranges_in_any_order_give_the_same_envelope_which_opens(tmp_path_factory, data, block, cuts):
    tmp = tmp_path_factory.mktemp("env")
    env, whole = _seal(tmp, data, block)
    assert len(whole) == env.size == sealed_size(len(data), block) == HEADER + len(data) + TAG * env.count
    fd = os.open(tmp / "plain.bin", os.O_RDONLY)
    try:
        source = SealedSource(fd, len(data), env)
        bounds = sorted({0, env.size, *(c % (env.size + 1) for c in cuts)})
        pieces = list(zip(bounds, bounds[1:]))
        pieces.reverse()  # out of order, each read on its own
        got = {start: source.read(end - start, start) for start, end in pieces}
    finally:
        os.close(fd)
    assert b"".join(got[s] for s in sorted(got)) == whole
    stored = tmp / ("plain.bin" + SUFFIX)
    stored.write_bytes(whole)
    assert open_in_place(str(stored), PASS) == str(tmp / "plain.bin")
    assert (tmp / "plain.bin").read_bytes() == data and not stored.exists()


def test_overhead_and_header_layout(tmp_path):
    data = os.urandom(5 * envelope.BLOCK + 3)
    env, whole = _seal(tmp_path, data, envelope.BLOCK)
    assert env.count == 6 and len(whole) == len(data) + HEADER + 6 * TAG
    assert whole[:8] == b"FASPENV\x02" and int.from_bytes(whole[32:36], "big") == envelope.BLOCK
    assert int.from_bytes(whole[36:44], "big") == len(data)
    assert sealed_size(0) == HEADER + TAG  # an empty file is one empty, authenticated block


def _stored(tmp_path, data=None, block=64):
    data = os.urandom(1000) if data is None else data
    _, whole = _seal(tmp_path, data, block)
    stored = tmp_path / ("f" + SUFFIX)
    stored.write_bytes(whole)
    return stored, whole


def _fails(stored, code, passphrase=PASS):
    with pytest.raises(EngineError) as err:
        open_in_place(str(stored), passphrase)
    assert err.value.code == code
    assert stored.exists() and not (stored.parent / "f").exists()
    assert not (stored.parent / "f.fasp-decrypting").exists()


def test_wrong_passphrase_is_49(tmp_path):
    stored, _ = _stored(tmp_path)
    _fails(stored, 49, "wrong")


@pytest.mark.parametrize("where", [0, 7, 10, 30, 40, 47, 50, 63, 64, 500, -17, -1])
def test_any_flipped_byte_fails(tmp_path, where):
    stored, whole = _stored(tmp_path)
    damaged = bytearray(whole)
    damaged[where] ^= 0x01
    stored.write_bytes(damaged)
    # header fields are covered by the key check (49); the magic and version by the format (48);
    # sealed blocks by their tags (48)
    _fails(stored, 49 if 8 <= where < HEADER else 48)


@pytest.mark.parametrize("cut", [1, TAG, 64 + TAG, 1000])
def test_truncated_or_extended_envelope_is_48(tmp_path, cut):
    stored, whole = _stored(tmp_path)
    stored.write_bytes(whole[:-cut])
    _fails(stored, 48)
    stored.write_bytes(whole + b"\0" * cut)
    _fails(stored, 48)


def test_dropped_last_block_with_a_forged_size_fails(tmp_path):
    """The last block is flagged in its associated data: the header can't be rewritten to end early."""
    data = os.urandom(200)
    env = _envelope(len(data), 64)
    sealed = [env.seal(i, data[i * 64 : (i + 1) * 64]) for i in range(env.count)]
    block = env.seal(1, data[64:128])
    with pytest.raises(EngineError) as err:  # its tag's last byte changed (set to 0, it was 0 one time in 256)
        env.unseal(1, block[:-1] + bytes([block[-1] ^ 0x01]))
    assert err.value.code == 48
    # a non-last block presented as the last one does not authenticate
    one = Envelope(PASS, env.header[8:24], env.header[24:32], 64, 64)
    with pytest.raises(EngineError):
        one.unseal(0, sealed[0])


def test_a_plain_file_without_suffix_is_left_alone(tmp_path):
    plain = tmp_path / "notes.txt"
    plain.write_bytes(b"just text")
    assert open_in_place(str(plain), PASS) is None and plain.read_bytes() == b"just text"


def _streamed(tmp_path, data: bytes) -> tuple[Path, bytes]:
    """``data`` through a StreamSealer in uneven writes, stored as f.aspera-env."""
    sealer = StreamSealer(PASS)
    cuts = sorted({0, min(7, len(data)), len(data) // 2, len(data)})
    whole = b"".join(sealer.feed(data[a:b]) for a, b in zip(cuts, cuts[1:])) + sealer.close()
    stored = tmp_path / ("f" + SUFFIX)
    stored.write_bytes(whole)
    return stored, whole


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 2 * BLOCK + 5])
def test_a_stream_sealed_as_it_comes_is_an_envelope_of_its_length_which_opens(tmp_path, size):
    """A stream's length is unknown while it is sealed: its header says STREAMED, the rest is laid out as a
    file's envelope, and opening takes the length from the stored size."""
    data = os.urandom(size)
    stored, whole = _streamed(tmp_path, data)
    assert len(whole) == sealed_size(size) and whole[:8] == b"FASPENV\x02"
    assert int.from_bytes(whole[36:44], "big") == STREAMED
    assert open_in_place(str(stored), PASS) == str(tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == data and not stored.exists()


@pytest.mark.parametrize("keep", [HEADER, HEADER + 10, HEADER + BLOCK + TAG, HEADER + BLOCK + TAG + 16])
def test_a_stream_cut_short_anywhere_is_48(tmp_path, keep):
    """Cut at a block boundary, the envelope still has a plausible size, but its new last block was not
    sealed as the last one; cut elsewhere, no plain size fits it."""
    stored, whole = _streamed(tmp_path, os.urandom(2 * BLOCK + 5))
    stored.write_bytes(whole[:keep])
    _fails(stored, 48)
    stored.write_bytes(whole + whole[HEADER : HEADER + BLOCK + TAG])  # a block appended
    _fails(stored, 48)


def test_a_streamed_header_made_sized_is_49(tmp_path):
    """STREAMED is under the key check: rewritten to the true length, the header no longer fits the passphrase."""
    stored, whole = _streamed(tmp_path, os.urandom(1000))
    stored.write_bytes(whole[:36] + (1000).to_bytes(8, "big") + whole[44:])
    _fails(stored, 49)
    stored.write_bytes(whole)
    _fails(stored, 49, "wrong")
