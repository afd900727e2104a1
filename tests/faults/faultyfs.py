"""A failing disk for the fault suite: a FUSE passthrough of a backing directory whose reads and writes of one file
fail with EIO past a byte offset while a switch file exists (``SWITCH.hit`` then holds the CLOCK_MONOTONIC
second of the first failure).

Why FUSE: a real failing device (device-mapper's ``error`` target) reports EIO only at writeback, after pwrite
returned; through FUSE with direct_io every pread/pwrite reaches this process, so the error lands exactly on the
syscall the engine makes, and removing the switch file heals the disk for the resume.

Run as ``python -m tests.faults.faultyfs BACKING MOUNTPOINT SWITCH NAME AFTER`` (root: libfuse mounts with
mount(2)); it serves in the foreground until unmounted.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path
from typing import Any

import mfusepy as fuse

_STAT_KEYS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks", "st_blksize")


class FaultyPassthrough(fuse.Operations):
    """Every operation on the backing directory; the file named ``name`` fails with EIO at or past ``after``."""

    use_ns = True

    def __init__(self, backing: str, switch: str, name: str, after: int) -> None:
        self.backing, self.switch, self.name, self.after = backing, switch, name, after
        self.paths: dict[int, str] = {}

    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _fail(self, fh: int, offset: int, size: int) -> None:
        if (
            offset + size > self.after
            and os.path.basename(self.paths.get(fh, "")) == self.name
            and os.path.exists(self.switch)
        ):
            if not os.path.exists(self.switch + ".hit"):  # when the first EIO was returned, for the test's timing
                Path(self.switch + ".hit").write_text(repr(time.monotonic()))
            raise fuse.FuseOSError(errno.EIO)

    def _opened(self, path: str, fh: int) -> int:
        self.paths[fh] = path
        return fh

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        st = os.lstat(self._real(path))
        times = {f"st_{t}time": getattr(st, f"st_{t}time_ns") for t in "amc"}  # use_ns: nanoseconds
        return {**{key: getattr(st, key) for key in _STAT_KEYS}, **times}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def open(self, path: str, flags: int) -> int:
        return self._opened(path, os.open(self._real(path), flags))

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return self._opened(path, os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self._fail(fh, offset, size)
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._fail(fh, offset, len(data))
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        os.truncate(self._real(path), length)

    def flush(self, path: str, fh: int) -> None:
        pass

    def fsync(self, path: str, datasync: bool, fh: int) -> None:
        os.fsync(fh)

    def release(self, path: str, fh: int) -> None:
        self.paths.pop(fh, None)
        os.close(fh)

    def unlink(self, path: str) -> None:
        os.unlink(self._real(path))

    def rename(self, old: str, new: str) -> None:
        os.rename(self._real(old), self._real(new))

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._real(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._real(path))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._real(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._real(path), uid, gid)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        if times is None:  # now
            os.utime(self._real(path))
        else:
            os.utime(self._real(path), ns=times)

    def access(self, path: str, amode: int) -> None:
        if not os.access(self._real(path), amode):
            raise fuse.FuseOSError(errno.EACCES)

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._real(path))
        return {
            key: getattr(st, key)
            for key in (
                "f_bavail",
                "f_bfree",
                "f_blocks",
                "f_bsize",
                "f_favail",
                "f_ffree",
                "f_files",
                "f_flag",
                "f_frsize",
                "f_namemax",
            )
        }


def main(argv: list[str]) -> None:
    backing, mountpoint, switch, name, after = argv
    Path(mountpoint).mkdir(parents=True, exist_ok=True)
    fuse.FUSE(
        FaultyPassthrough(backing, switch, name, int(after)),
        mountpoint,
        foreground=True,
        direct_io=True,
        default_permissions=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
