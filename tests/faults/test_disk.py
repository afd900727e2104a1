"""Disk errors on either side end the file concerned at once with IBM's code, the rest of the session goes on,
no temporary file stays, and a resume finishes the file once the disk is fixed (size + sha256)."""
from __future__ import annotations

import time

import pytest

from tests.engine.helpers import remote
from tests.faults.helpers import FirstTime, finish, full, leftovers, needs_root, remount, resume, run, tmpfs
from tests.support.files import assert_same_file, random_file
from tests.support.programs import ENGINE
from tests.support.root import require_root
from tests.support.servers import start_fasp_server

pytestmark = [needs_root, pytest.mark.timeout(90)]
BIG = 20 << 20
SOON_S = 1.0
"""Seconds from the disk filling up (polled with statvfs) to the management port's FILEERROR: the error's trip
to the peer and back to the manager (it was a 20 s stall ending with 40)."""


def _args(server, listener, *more: str) -> list[str]:
    return ["-q", "-P", str(server.port), "-M", str(listener.port), "-k", "2", *more]


def _file_error(listener) -> tuple[float, object]:
    hit = listener.wait_for(lambda f: f.type == "FILEERROR", 15)
    assert hit is not None, listener.types()
    return hit


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_disk_full(tmp_path, listener, spawn, record, direction):
    side = "receiver: server" if direction == "upload" else "receiver: client"
    with tmpfs(tmp_path / "small-disk", "8m") as disk, \
            start_fasp_server(tmp_path / "srv", docroot=disk if direction == "upload" else None) as server:
        if direction == "upload":
            little = random_file(tmp_path / "src" / "a-little.bin", 4096)
            big = random_file(tmp_path / "src" / "big.bin", BIG)
            paths = [str(little), str(big), remote(server, "/")]
        else:
            little = random_file(server.docroot / "a-little.bin", 4096)
            big = random_file(server.docroot / "big.bin", BIG)
            paths = [remote(server, "/a-little.bin"), remote(server, "/big.bin"), str(disk)]
        started = time.monotonic()
        filled = FirstTime(lambda: full(disk))
        proc = spawn(_args(server, listener, *paths), server.env())
        at, frame = _file_error(listener)
        out = finish(proc, started)
        seconds = at - filled.stop()
        assert frame.int("Code") == 25, frame
        assert frame.get("File").endswith("big.bin")
        assert seconds < SOON_S, seconds
        # the session: 27 (some files failed), naming the first failure
        assert out.code == 27 and "No space left" in out.message, out
        assert_same_file(little, disk / "a-little.bin")  # the other file went on
        assert leftovers(disk) == []  # no .NAME.fasp-resume.tmp beside the partial file
        landed = (disk / "big.bin").stat().st_size
        row = record("disk full (ENOSPC), another file in the session", side, "25 (session: 27)", out.message,
                     seconds)
        remount(disk, "size=40m")
        sent = resume(server, paths[1:], big, disk / "big.bin", most=BIG - min(landed, 4 << 20))
        row["recovery"] = f"-k 2 once space is freed: sent {sent >> 20} of {BIG >> 20} MiB, sha256 equal"


def test_file_too_big_upload(tmp_path, listener, spawn, record):
    """RLIMIT_FSIZE on the receiving engine: EFBIG is 24."""
    limited = ["prlimit", f"--fsize={4 << 20}", *ENGINE]
    src = random_file(tmp_path / "src" / "big.bin", 8 << 20)
    docroot = tmp_path / "docroot"
    with start_fasp_server(tmp_path / "srv", docroot=docroot, engine_command=limited) as server:
        started = time.monotonic()
        limit = FirstTime(lambda: (docroot / "big.bin").stat().st_size >= 4 << 20)
        proc = spawn(_args(server, listener, str(src), remote(server, "/")), server.env())
        at, frame = _file_error(listener)
        out = finish(proc, started)
        seconds = at - limit.stop()
        assert frame.int("Code") == 24 and out.code == 24, (frame, out)
        assert seconds < SOON_S, seconds
        assert leftovers(docroot) == []
        row = record("file too big (RLIMIT_FSIZE, EFBIG)", "receiver: server", 24, out.message, seconds)
    with start_fasp_server(tmp_path / "srv2", docroot=docroot) as server:  # the limit lifted
        sent = resume(server, [str(src), remote(server, "/")], src, docroot / "big.bin", most=6 << 20)
    row["recovery"] = f"-k 2 without the limit: sent {sent >> 20} of 8 MiB, sha256 equal"


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_read_only_destination(tmp_path, listener, spawn, record, direction):
    with tmpfs(tmp_path / "ro-disk", "16m") as disk, \
            start_fasp_server(tmp_path / "srv", docroot=disk if direction == "upload" else None) as server:
        if direction == "upload":
            src = random_file(tmp_path / "src" / "f.bin", 1 << 20)
            paths = [str(src), remote(server, "/")]
        else:
            src = random_file(server.docroot / "f.bin", 1 << 20)
            paths = [remote(server, "/f.bin"), str(disk)]
        remount(disk, "ro")
        started = time.monotonic()
        proc = spawn(_args(server, listener, *paths), server.env())
        at, frame = _file_error(listener)
        out = finish(proc, started)
        assert frame.int("Code") == 26 and out.code == 26, (frame, out)
        assert at - started < 3  # the whole session: SSH, then the file's open fails
        record("read-only destination (EROFS) (seconds: the whole session)", "receiver: " + ("server" if direction == "upload" else "client"),
               26, out.message, at - started, "retry once writable: sha256 equal")
        remount(disk, "rw")
        out = run(_args(server, listener, *paths), server.env())
        assert out.code == 0, out
        assert_same_file(src, disk / "f.bin")


@pytest.mark.skip(reason="EIO (36 on a write, 35 on a read) is not provoked: writes land in the page cache, so a "
                         "failing device (device-mapper `error` target) reports EIO at writeback, which no pwrite "
                         "sees; the write path maps any other errno to 36 (fasp/datapath/udpchannel.py, _on_written)")
def test_device_io_error():
    pass


def test_permission_denied(tmp_path, listener, spawn, record):
    """A directory the engine may not write (mode 0555): 5. As root, permission bits are bypassed through
    CAP_DAC_OVERRIDE, so the server engine runs without it (setpriv drops it from the bounding set)."""
    require_root("setpriv drops capabilities from the bounding set")
    unprivileged = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *ENGINE]
    src = random_file(tmp_path / "src" / "f.bin", 1 << 20)
    docroot = tmp_path / "docroot"
    (docroot / "locked").mkdir(parents=True)
    (docroot / "locked").chmod(0o555)
    with start_fasp_server(tmp_path / "srv", docroot=docroot, engine_command=unprivileged) as server:
        paths = [str(src), remote(server, "/locked/")]
        started = time.monotonic()
        proc = spawn(_args(server, listener, *paths), server.env())
        at, frame = _file_error(listener)
        out = finish(proc, started)
        assert frame.int("Code") == 5 and out.code == 5, (frame, out)
        assert at - started < 3, at - started  # the whole session: SSH, then the file's open fails
        assert leftovers(docroot) == [] and list((docroot / "locked").iterdir()) == []
        record("permission denied (EACCES, directory 0555, engine without CAP_DAC_OVERRIDE) (seconds: the whole "
               "session)", "receiver: server", 5, out.message, at - started, "retry once writable: sha256 equal")
        (docroot / "locked").chmod(0o755)
        out = run(_args(server, listener, *paths), server.env())
        assert out.code == 0, out
        assert_same_file(src, docroot / "locked" / "f.bin")
