"""What the emulator's tests share: a pair of private host namespaces per test process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from bench import netns
from bench.netns import Hosts
from tests.support.root import require_root


@contextmanager
def private_hosts(prefix: str, subnet: str) -> Iterator[Hosts]:
    """Hosts named for this process (two test runs never share them), removed if a test left them behind."""
    require_root("network namespaces and TUN devices")
    hosts = Hosts(prefix=f"{prefix}{os.getpid() % 100000}", subnet=subnet)
    try:
        yield hosts
    finally:
        for ns in (hosts.a, hosts.b):  # only if a test failed half-way
            if netns.exists(ns):
                netns.delete(ns)
