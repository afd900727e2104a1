"""Helpers for engine tests: run the real fasp-ascp, a tiny management-port listener, byte checks."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from faspmanager import mgmt

ENGINE = [sys.executable, "-m", "fasp"]


def sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def assert_same_file(a: Path, b: Path, digest_of_a: str | None = None) -> None:
    """``b`` has ``a``'s size and sha256 (pass ``digest_of_a`` to hash a big source only once)."""
    assert b.is_file(), f"{b} missing"
    assert a.stat().st_size == b.stat().st_size, f"{b}: size {b.stat().st_size} != {a.stat().st_size}"
    assert (digest_of_a or sha256(a)) == sha256(b), f"{b}: content differs"


def assert_same_tree(a: Path, b: Path) -> int:
    """Every file under ``a`` is under ``b`` with the same bytes, and nothing else is; the file count."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    dirs_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_dir())
    dirs_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_dir())
    assert dirs_a == dirs_b
    for rel in files_a:
        assert_same_file(a / rel, b / rel)
    return len(files_a)


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left:
            n = min(left, 1 << 20)
            handle.write(os.urandom(n))
            left -= n
    return path


def run_ascp(args: list[str], env: dict, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ENGINE, *args], env=env, capture_output=True, timeout=timeout, cwd=cwd)


def fasp_args(server, *args: str) -> list[str]:
    return ["-q", "-P", str(server.port), *args]


def remote(server, path: str) -> str:
    return f"{server.user}@{server.host}:{path}"


def server_mode_pids(marker: str) -> list[int]:
    """Live server-mode engines whose command line mentions ``marker`` (e.g. their docroot)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and b"--server" in cmd and marker.encode() in b" ".join(cmd):
            pids.append(int(entry.name))
    return pids


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class MgmtListener:
    """The manager's side of -M: accepts the engine, records events with arrival times, sends commands."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.events: list[tuple[float, mgmt.Frame]] = []
        self._conn: socket.socket | None = None
        self._connected = threading.Event()
        self._changed = threading.Condition()
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._sock.settimeout(30)
        try:
            self._conn, _ = self._sock.accept()
        except OSError:
            return
        self._connected.set()
        decoder = mgmt.Decoder()
        while True:
            try:
                data = self._conn.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            frames = decoder.feed(data)
            with self._changed:
                self.events.extend((time.monotonic(), f) for f in frames)
                self._changed.notify_all()
        self.closed.set()
        with self._changed:
            self._changed.notify_all()

    def send(self, frame_type: str, fields: dict | None = None, payload: bytes = b"") -> None:
        assert self._connected.wait(20), "engine never connected to the management port"
        self._conn.sendall(mgmt.encode(frame_type, fields or {}, payload))

    def types(self) -> list[str]:
        return [f.type for _, f in self.events]

    def of(self, frame_type: str) -> list[mgmt.Frame]:
        return [f for _, f in self.events if f.type == frame_type]

    def wait_for(self, predicate, timeout: float = 30, since: float = 0.0) -> tuple[float, mgmt.Frame] | None:
        """The first (time, frame) recorded at or after ``since`` that satisfies ``predicate``,
        waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for item in self.events[seen:]:
                    if item[0] >= since and predicate(item[1]):
                        return item
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed.is_set():
                    return None
                self._changed.wait(left)

    def drop(self) -> None:
        """The manager goes away: close its side of the connection."""
        if self._conn is not None:
            self._conn.shutdown(socket.SHUT_RDWR)
            self._conn.close()

    def close(self) -> None:
        try:
            if self._conn is not None:
                self._conn.close()
        except OSError:
            pass
        self._sock.close()
