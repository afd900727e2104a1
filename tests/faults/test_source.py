"""The source changes under a running upload: shrunk is 35 at once (its bytes are gone), grown or deleted
finishes with the bytes announced, changed finishes with whatever each piece read; a retry (-k 2 or -k 3) then
makes the destination the source, byte for byte."""

from __future__ import annotations

import os
import time

import pytest

from tests.engine.helpers import remote
from tests.faults.helpers import finish, resume, run
from tests.support.files import assert_same_file, random_file

pytestmark = pytest.mark.timeout(60)
SIZE = 16 << 20
MID = 2 << 20


def _upload(server, listener, spawn, src):
    started = time.monotonic()
    proc = spawn(
        ["-q", "-P", str(server.port), "-M", str(listener.port), "-l", "40000", str(src), remote(server, "/")],
        server.env(),
    )
    assert listener.wait_for(lambda f: f.type == "STATS" and f.int("TransferBytes") > MID, 20), listener.types()
    return proc, started


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_source_shrunk(fasp_server, tmp_path, listener, spawn, record, direction):
    """Its bytes are gone: that file fails with 35 at once, the other file of the session still lands."""
    server = fasp_server
    there = tmp_path if direction == "upload" else server.docroot
    src = random_file(there / "shrunk.bin", SIZE)
    other = random_file(there / "other.bin", 4 << 20)
    dest = server.docroot if direction == "upload" else tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    if direction == "upload":
        paths = [str(src), str(other), remote(server, "/")]
    else:
        paths = [remote(server, "/shrunk.bin"), remote(server, "/other.bin"), str(dest)]
    started = time.monotonic()
    proc = spawn(["-q", "-P", str(server.port), "-M", str(listener.port), "-l", "40000", *paths], server.env())
    assert listener.wait_for(lambda f: f.type == "STATS" and f.int("TransferBytes") > MID, 20), listener.types()
    changed = time.monotonic()
    os.truncate(src, MID // 2)  # below what was sent: the next read fails
    hit = listener.wait_for(lambda f: f.type == "FILEERROR", 10)
    out = finish(proc, started)
    assert hit is not None, (listener.types(), out)
    seconds = hit[0] - changed
    assert hit[1].int("Code") == 35 and hit[1].get("File").endswith("shrunk.bin"), hit
    assert seconds < 2, seconds
    assert out.code == 27 and "shorter" in out.message, out  # the session: some files failed
    assert_same_file(other, dest / "other.bin")  # the session went on for the other file
    side = "sender: client" if direction == "upload" else "sender: server"
    row = record(
        "source shrunk mid-transfer, another file in the session", side, "35 (session: 27)", out.message, seconds
    )
    sent = resume(server, paths[:1] + paths[2:], src, dest / "shrunk.bin", most=SIZE)
    row["recovery"] = f"retry -k 2: the new {MID // 2 >> 20} MiB file ({sent >> 10} KiB sent), sha256 equal"


@pytest.mark.parametrize("change", ["grown", "deleted", "changed"])
def test_source_changed(fasp_server, tmp_path, listener, spawn, record, change):
    server = fasp_server
    src = random_file(tmp_path / f"{change}.bin", SIZE)
    before = src.read_bytes()
    proc, started = _upload(server, listener, spawn, src)
    if change == "grown":
        with open(src, "ab") as handle:
            handle.write(os.urandom(1 << 20))
    elif change == "deleted":
        src.unlink()
    else:  # new bytes over the first MiB, which has already landed: the destination keeps the old ones
        with open(src, "r+b") as handle:
            handle.write(os.urandom(1 << 20))
    out = finish(proc, started)
    assert out.code == 0, out
    dest = server.docroot / src.name
    assert dest.stat().st_size == SIZE  # the size announced at the start
    if change == "deleted":  # the open descriptor still reads the old bytes: the file arrives whole
        assert dest.read_bytes() == before
        record(
            "source deleted mid-transfer",
            "sender: client",
            0,
            "(none: the open file is sent whole)",
            None,
            "none needed: sha256 equal to the file as it was",
        )
        return
    if change == "grown":
        assert dest.read_bytes() == before  # the first SIZE bytes, as they were announced
        sent = resume(server, [str(src), remote(server, "/")], src, dest, most=2 << 20)
        recovery = f"retry -k 2 sends the new tail ({sent >> 10} KiB), sha256 equal"
    else:
        got = dest.read_bytes()  # each piece as it was read when sent: the old first MiB, the rest the same
        assert got[: 1 << 20] == before[: 1 << 20] and got[1 << 20 :] == src.read_bytes()[1 << 20 :]
        out2 = run(["-q", "-P", str(server.port), "-k", "3", str(src), remote(server, "/")], server.env())
        assert out2.code == 0, out2
        assert_same_file(src, dest)
        recovery = "retry with -k 3 (whole-file checksum) resends it: sha256 equal"
    record(
        f"source {change} mid-transfer",
        "sender: client",
        0,
        "(none: the file ends at the size announced)",
        None,
        recovery,
    )
