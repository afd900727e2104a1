"""Stream: the PUT / WRITE / CLOSE frames it puts on a real management socket."""

from __future__ import annotations

import socket

import pytest

import faspmanager as fm
from faspmanager.mgmt import Decoder
from faspmanager.session import MgmtConnection


@pytest.fixture
def wire():
    ours, theirs = socket.socketpair()
    conn = MgmtConnection(ours)
    theirs.settimeout(5)
    yield conn, theirs
    conn.close()
    theirs.close()


def _frames(sock, count):
    decoder, frames = Decoder(), []
    while len(frames) < count:
        frames += decoder.feed(sock.recv(65536))
    return frames


def test_send_splits_into_chunk_size_writes(wire):
    conn, theirs = wire
    stream = fm.Stream("out/file.bin", conn, 1000)
    with pytest.raises(fm.StreamStateError):
        stream.send(b"x")
    with pytest.raises(fm.StreamStateError):
        stream.close()
    stream.open()
    with pytest.raises(fm.StreamStateError):
        stream.open()
    data = bytes(range(256)) * 10  # 2560 bytes
    stream.send(data)
    stream.send(b"")
    stream.close()
    stream.close()
    frames = _frames(theirs, 5)
    assert [f.type for f in frames] == ["PUT", "WRITE", "WRITE", "WRITE", "CLOSE"]
    assert frames[0].get("Destination") == "out/file.bin" and frames[0].int("ChunkSize") == 1000
    assert [len(f.payload) for f in frames[1:4]] == [1000, 1000, 560]
    assert b"".join(f.payload for f in frames[1:4]) == data


def test_destination_with_a_line_break_is_an_invalid_path(wire):
    conn, _ = wire
    with pytest.raises(fm.InvalidPathError):
        fm.Stream("bad\nname", conn, 10).open()
    with pytest.raises(ValueError):
        fm.Stream("ok", conn, 0)
