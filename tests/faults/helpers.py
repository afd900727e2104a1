"""Helpers for fault tests: small filesystems of a given size, timed engine runs, the error a user sees."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
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

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        assert self.at is not None, "the condition never held"
        return self.at


def full(path: Path) -> bool:
    """Whether the filesystem at ``path`` has less than one 64 KiB write's room left."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize < 64 << 10
