"""Network namespaces as disposable "hosts" for benchmarks.

Every benchmark peer runs inside a namespace we create, so the traffic it
generates never leaves the machine and two namespaces can only talk through
the WAN emulator.  Deleting a namespace first kills what still runs inside
it: a namespace with a live process would outlive ``ip netns del``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Hosts:
    """Names and addresses of the two emulated hosts."""

    prefix: str = "fasp"
    subnet: str = "10.77.0"

    @property
    def a(self) -> str:
        return f"{self.prefix}-a"

    @property
    def b(self) -> str:
        return f"{self.prefix}-b"

    @property
    def addr_a(self) -> str:
        return f"{self.subnet}.1"

    @property
    def addr_b(self) -> str:
        return f"{self.subnet}.2"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def exists(name: str) -> bool:
    return name in ip("netns", "list").stdout.split()


def pids(name: str) -> list[int]:
    out = ip("netns", "pids", name, check=False).stdout
    return [int(p) for p in out.split()]


def create(name: str, tcp_cc: str | None = None) -> None:
    """A fresh namespace with loopback up (removes a stale one of that name).

    ``tcp_cc`` sets the namespace's TCP congestion control (default: the
    machine's).  TCP baselines depend on it, so a benchmark names the one it
    uses.  The kernel lets a namespace pick only algorithms listed in the
    host's ``net.ipv4.tcp_allowed_congestion_control``."""
    if exists(name):
        delete(name)
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")
    if tcp_cc:
        done = subprocess.run(
            argv(name, ["sysctl", "-q", "-w", f"net.ipv4.tcp_congestion_control={tcp_cc}"]),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            delete(name)
            raise RuntimeError(
                f"cannot use TCP congestion control {tcp_cc!r} in a namespace "
                f"(is it in net.ipv4.tcp_allowed_congestion_control?): {done.stderr.strip()}"
            )


def delete(name: str, grace_s: float = 2.0) -> None:
    """Kill everything left inside the namespace, then delete it."""
    left = pids(name)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = pids(name)
        if not left:
            break
    ip("netns", "del", name, check=False)


def argv(name: str, command: list[str]) -> list[str]:
    """The command line that runs ``command`` inside namespace ``name``."""
    return ["ip", "netns", "exec", name, *command]


@dataclass(frozen=True)
class SameHost:
    """Both ends in one namespace on 127.0.0.1 (the attributes of :class:`Hosts`)."""

    a: str
    b: str
    addr_a: str = "127.0.0.1"
    addr_b: str = "127.0.0.1"


class Loopback:
    """One namespace holding both "hosts" on 127.0.0.1: the loopback scenario,
    with the same interface as :class:`bench.wan.Wan` (hosts, popen, run)."""

    def __init__(self, name: str = "fasp-lo", tcp_cc: str | None = None) -> None:
        self.name = name
        self.tcp_cc = tcp_cc
        self.hosts = SameHost(name, name)

    def __enter__(self) -> Loopback:
        create(self.name, self.tcp_cc)
        return self

    def __exit__(self, *exc) -> None:
        delete(self.name)

    def popen(self, side: str, command: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(argv(self.name, command), **kwargs)

    def run(self, side: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(argv(self.name, command), **kwargs)
