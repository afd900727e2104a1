"""Hosts as network namespaces on one switch, for tests of a deployment spread over machines.

Each host is a namespace with one link, ``eth0``, to a bridge that lives in a
namespace of its own (the switch), so nothing touches the host's network:
addresses are in 10.231.0.0/24, and deleting the namespaces removes all of
it. ``cut``/``restore`` set a host's link down and up (its machine unplugged).
:func:`inside` moves the calling thread (and the threads and sockets it then
creates) into a host: a test process acting as a client on one of them.
Redis with Sentinel: :class:`RedisHA` (a primary, a replica, three Sentinels).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

from tasks.local import Service, redis_executable
from tests.support.root import require_root

SUBNET = "10.231.0"
_CLONE_NEWNET = 0x40000000


def _run(argv: Sequence[str]) -> None:
    subprocess.run(argv, capture_output=True, text=True, check=True)


class Network:
    """Namespaces ``<tag><name>`` joined by the switch; ``addr[name]`` is each host's address."""

    def __init__(self, names: Sequence[str], tag: str) -> None:
        self.tag = tag
        self.switch = f"{tag}sw"
        self.addr = {name: f"{SUBNET}.{10 + i}" for i, name in enumerate(names)}
        self._made: list[str] = []

    def ns(self, name: str) -> str:
        return f"{self.tag}{name}"

    def wrap(self, name: str) -> tuple[str, ...]:
        """The argv prefix that runs a program on host ``name``."""
        return ("ip", "netns", "exec", self.ns(name))

    def build(self) -> Network:
        for ns in (self.switch, *map(self.ns, self.addr)):
            _run(["ip", "netns", "add", ns])
            self._made.append(ns)
        _run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
        for i, (name, addr) in enumerate(self.addr.items()):
            port = f"p{i}"
            _run(
                [
                    "ip",
                    "-n",
                    self.ns(name),
                    "link",
                    "add",
                    "eth0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    port,
                    "netns",
                    self.switch,
                ]
            )
            _run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", self.ns(name), "addr", "add", f"{addr}/24", "dev", "eth0"])
            for dev in ("lo", "eth0"):
                _run(["ip", "-n", self.ns(name), "link", "set", dev, "up"])
        return self

    def cut(self, name: str) -> None:
        _run(["ip", "-n", self.ns(name), "link", "set", "eth0", "down"])

    def restore(self, name: str) -> None:
        _run(["ip", "-n", self.ns(name), "link", "set", "eth0", "up"])

    def delete(self) -> None:
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextmanager
def network(names: Sequence[str]) -> Iterator[Network]:
    require_root("network namespaces")
    net = Network(names, f"mh{os.getpid() % 100000}")
    try:
        yield net.build()
    finally:
        net.delete()


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """The calling thread in namespace ``ns`` (sockets it opens meanwhile stay there), then back where it was."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), f"setns into {ns}")
        yield
    finally:
        if libc.setns(home, _CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), "setns back home")
        os.close(home)
        os.close(target)


class RedisHA:
    """A password-protected primary on host ``a``, its replica on host ``b`` and three Sentinels (one on ``a``, two
    on ``b``) watching it under the name ``MASTER`` with short timeouts: a dead primary is replaced within seconds."""

    MASTER = "faspq"
    SENTINEL_PORTS = (26379, 26379, 26380)

    def __init__(self, net: Network, a: str, b: str, workdir: Path, password: str) -> None:
        self.net, self.password = net, password
        workdir.mkdir(parents=True, exist_ok=True)
        self.services: dict[str, Service] = {}
        self.addr = {"primary": net.addr[a], "replica": net.addr[b]}
        self.sentinels = [(net.addr[host], port) for host, port in zip((a, b, b), self.SENTINEL_PORTS)]
        try:
            self._start_all(a, b, workdir)
        except BaseException:
            self.stop()
            raise

    def _start_all(self, a: str, b: str, workdir: Path) -> None:
        password = self.password
        for role, host in (("primary", a), ("replica", b)):
            lines = [f'requirepass "{password}"', f'masterauth "{password}"']
            if role == "replica":
                lines.append(f"replicaof {self.addr['primary']} 6379")
            self._start(role, host, workdir, lines, ["--port", "6379", "--bind", self.addr[role], "--save", ""])
        for i, ((addr, port), host) in enumerate(zip(self.sentinels, (a, b, b))):
            lines = [
                f"sentinel monitor {self.MASTER} {self.addr['primary']} 6379 2",
                f'sentinel auth-pass {self.MASTER} "{password}"',
                f"sentinel down-after-milliseconds {self.MASTER} 1000",
                f"sentinel failover-timeout {self.MASTER} 4000",
            ]
            self._start(f"sentinel{i}", host, workdir, lines, ["--sentinel", "--port", str(port), "--bind", addr])
        self.wait_for(self._ready, 30, "replica and Sentinels seeing each other")

    def _start(self, name: str, host: str, workdir: Path, lines: list[str], args: list[str]) -> None:
        conf = workdir / f"{name}.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        argv = [*self.net.wrap(host), redis_executable(), str(conf), *args, "--dir", str(workdir)]
        self.services[name] = Service(argv, workdir / f"{name}.log", cwd=workdir)

    def url(self) -> str:
        """Celery's form: the password (the primary's) and db on the first Sentinel."""
        first, *rest = self.sentinels
        return ";".join(
            [f"sentinel://:{self.password}@{first[0]}:{first[1]}/0", *(f"sentinel://{a}:{p}/0" for a, p in rest)]
        )

    def sentinel_info(self, index: int = 1) -> dict:
        """What Sentinel ``index`` knows of the primary (asked over a connection made in the caller's namespace)."""
        addr, port = self.sentinels[index]
        client = redis.Redis(addr, port, socket_timeout=2, decode_responses=True)
        try:
            return client.sentinel_master(self.MASTER)
        finally:
            client.close()

    def _ready(self) -> bool:
        """Every Sentinel sees the replica and the two other Sentinels (a failover needs their quorum)."""
        try:
            infos = [self.sentinel_info(i) for i in range(len(self.sentinels))]
        except redis.RedisError:
            return False
        return all(int(i.get("num-slaves", 0)) >= 1 and int(i.get("num-other-sentinels", 0)) >= 2 for i in infos)

    def primary(self) -> str:
        return str(self.sentinel_info()["ip"])

    @staticmethod
    def wait_for(check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout} s")
            time.sleep(0.1)

    def kill_primary(self) -> None:
        self.services["primary"].kill()

    def stop(self) -> None:
        for service in self.services.values():
            service.kill()
