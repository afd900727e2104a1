"""Helpers for fault tests: small filesystems of a given size, timed engine runs, the error a user sees."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.programs import ENGINE

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount")


@contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` (mount's syntax: 8m) on ``path``, a directory of the test's own; unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


needs_btrfs = pytest.mark.skipif(not shutil.which("mkfs.btrfs"), reason="needs btrfs-progs (a quota: EDQUOT)")


@contextmanager
def btrfs_quota(path: Path, limit: str) -> Iterator[Path]:
    """A btrfs (on a 128 MiB loop image beside ``path``) whose top subvolume a qgroup limits to ``limit`` bytes
    (btrfs's syntax: 8M): writes past it fail with EDQUOT, for root too. This kernel has neither tmpfs quotas nor
    the quota formats ext4's quota feature needs; ``quota_limit(path, "none")`` lifts it."""
    image = path.with_name(path.name + ".img")
    with open(image, "wb") as sparse:
        sparse.truncate(128 << 20)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(path)], check=True)  # the loop device goes at umount
    try:
        subprocess.run(["btrfs", "quota", "enable", str(path)], check=True)
        quota_limit(path, limit)
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], check=False)


def quota_limit(path: Path, limit: str) -> None:
    subprocess.run(["btrfs", "qgroup", "limit", limit, str(path)], check=True)


@dataclass
class Outcome:
    code: int
    message: str  # what the CLI printed (its last stderr line)
    seconds: float


def finish(proc: subprocess.Popen, started: float, timeout: float = 30) -> Outcome:
    """Wait for an engine started with ``spawn``; its exit code, error line and seconds since ``started``."""
    _, err = proc.communicate(timeout=timeout)
    lines = err.decode(errors="replace").strip().splitlines()
    return Outcome(proc.returncode, lines[-1] if lines else "", time.monotonic() - started)


def run(args: list[str], env: dict, timeout: float = 30) -> Outcome:
    started = time.monotonic()
    proc = subprocess.Popen([*ENGINE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        return finish(proc, started, timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def code_in(message: str) -> int | None:
    """The code in ``fasp-ascp: error N: ...``."""
    match = re.search(r"error (\d+):", message)
    return int(match.group(1)) if match else None


def leftovers(directory: Path) -> list[str]:
    """Temporary files a failed write could leave behind (a resume sidecar's own .tmp)."""
    return sorted(p.name for p in directory.rglob("*.tmp"))


def resume(server, paths: list[str], src: Path, dest: Path, *, most: int) -> int:
    """Resume (-k 2) once the fault is gone: every byte right (size + sha256) and at most ``most`` bytes sent
    (what landed before is not sent again); the bytes it sent."""
    from tests.engine.helpers import MgmtListener
    from tests.support.files import assert_same_file

    mgr = MgmtListener()
    try:
        out = run(["-q", "-P", str(server.port), "-M", str(mgr.port), "-k", "2", *paths], server.env())
        assert out.code == 0, out
        done = mgr.wait_for(lambda f: f.type == "DONE", 5)
        assert done is not None, mgr.types()
        sent = done[1].int("TransferBytes")
        assert sent is not None, done
    finally:
        mgr.close()
    assert_same_file(src, dest)
    assert sent <= most, f"resume sent {sent} bytes, more than {most}"
    return sent


class FirstTime:
    """The first moment ``predicate()`` held, polled every 10 ms on a thread (e.g. the disk filled up)."""

    def __init__(self, predicate):
        import threading

        self.at: float | None = None
        self._predicate = predicate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                if self._predicate():
                    self.at = time.monotonic()
                    return
            except OSError:
                pass

    def stop(self, otherwise: float | None = None) -> float:
        """When the predicate first held; ``otherwise`` if given and it never did."""
        self._stop.set()
        self._thread.join()
        at = self.at if self.at is not None else otherwise
        assert at is not None, "the condition never held"
        return at


def full(path: Path) -> bool:
    """Whether the filesystem at ``path`` has less than one 64 KiB write's room left."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize < 64 << 10


def _fuse_missing() -> str | None:
    """Why a FUSE disk cannot be mounted here, or None."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        return "needs root and /dev/fuse to mount a FUSE filesystem"
    try:
        import mfusepy  # noqa: F401  (loads libfuse3)
    except (ImportError, OSError) as exc:  # mfusepy raises OSError without libfuse
        return f"needs libfuse3 and mfusepy (apt-get install libfuse3-3; pip install mfusepy): {exc}"
    return None


needs_fuse = pytest.mark.skipif(_fuse_missing() is not None, reason=_fuse_missing() or "")


@dataclass
class FaultyDisk:
    """A mounted tests/faults/faultyfs.py: ``mount`` fails ``name`` with EIO past the offset between ``fail()``
    and ``heal()``."""

    mount: Path
    backing: Path
    switch: Path

    def fail(self) -> None:
        self.switch.touch()

    def heal(self) -> None:
        self.switch.unlink()

    def first_error_at(self) -> float:
        """The monotonic second the disk first returned EIO."""
        return float(Path(f"{self.switch}.hit").read_text())


@contextmanager
def faulty_disk(workdir: Path, name: str, after: int) -> Iterator[FaultyDisk]:
    """A FUSE disk in ``workdir`` (its backing directory beside it), to fail ``name`` past ``after`` bytes."""
    disk = FaultyDisk(workdir / "eio-disk", workdir / "eio-backing", workdir / "eio-failing")
    disk.backing.mkdir(parents=True)
    log = open(workdir / "faultyfs.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.faults.faultyfs",
            str(disk.backing),
            str(disk.mount),
            str(disk.switch),
            name,
            str(after),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(disk.mount):
            assert proc.poll() is None and time.monotonic() < deadline, (workdir / "faultyfs.log").read_text()
            time.sleep(0.05)
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk.mount)], check=False)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
