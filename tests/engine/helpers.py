"""Helpers for engine tests: run the real fasp-ascp, find server-mode engines, a tiny management-port listener."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

from faspmanager import mgmt
from tests.support.procs import processes
from tests.support.programs import ENGINE


def run_ascp(args: list[str], env: dict, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ENGINE, *args], env=env, capture_output=True, timeout=timeout, cwd=cwd)


def fasp_args(server, *args: str) -> list[str]:
    return ["-q", "-P", str(server.port), *args]


def remote(server, path: str) -> str:
    return f"{server.user}@{server.host}:{path}"


def server_mode_pids(marker: str) -> list[int]:
    """Live server-mode engines whose command line mentions ``marker`` (e.g. their docroot)."""
    return [p.pid for p in processes() if b"--server" in p.argv and marker.encode() in b" ".join(p.argv)]


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
