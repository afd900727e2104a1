"""Two network namespaces of the test's own, joined by a veth pair (of a chosen MTU), and UDP dropped at the
server side when a test asks.

Nothing touches the host's own network: both veth ends live in the namespaces
(created there directly), the addresses are link-local (169.254.77.0/30), and
the nftables table that drops UDP exists only in the server's namespace; all
of it goes when the namespaces are deleted. Processes join a namespace through
``ip netns exec`` (see :meth:`Lab.wrap`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.root import require_root

CLIENT_ADDR, SERVER_ADDR = "169.254.77.1", "169.254.77.2"
DROP_UDP = """table inet fasp_test {
    chain input {
        type filter hook input priority 0; policy accept;
        meta l4proto udp counter drop
    }
}
"""


@dataclass
class Lab:
    client_ns: str
    server_ns: str

    @staticmethod
    def wrap(ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]

    def udp_dropped(self) -> int:
        """Packets the server namespace's firewall has dropped so far."""
        out = _run(["ip", "netns", "exec", self.server_ns, "nft", "list", "table", "inet", "fasp_test"])
        match = re.search(r"counter packets (\d+)", out)
        return int(match.group(1)) if match else 0

    def received(self) -> tuple[int, int]:
        """(bytes, packets) the server namespace's veth end has received so far."""
        stats = json.loads(_run(["ip", "-n", self.server_ns, "-s", "-j", "link", "show", "veth1"]))[0]["stats64"]["rx"]
        return stats["bytes"], stats["packets"]


def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout


@contextmanager
def veth_lab(mtu: int = 1500) -> Iterator[Lab]:
    """Client namespace (169.254.77.1) and server namespace (169.254.77.2), joined by a veth pair of ``mtu``."""
    require_root("network namespaces")
    tag = f"fasp{os.getpid()}"
    lab = Lab(f"{tag}c", f"{tag}s")
    created = []
    try:
        for ns in (lab.client_ns, lab.server_ns):
            _run(["ip", "netns", "add", ns])
            created.append(ns)
        _run(
            [
                "ip",
                "-n",
                lab.client_ns,
                "link",
                "add",
                "veth0",
                "type",
                "veth",
                "peer",
                "name",
                "veth1",
                "netns",
                lab.server_ns,
            ]
        )
        for ns, dev, addr in ((lab.client_ns, "veth0", CLIENT_ADDR), (lab.server_ns, "veth1", SERVER_ADDR)):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev])
            # one datagram a packet (no UDP GSO batch crosses the pair whole), so the counters count datagrams
            _run(["ip", "-n", ns, "link", "set", dev, "mtu", str(mtu), "gso_max_segs", "1", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        yield lab
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextmanager
def udp_blocked_lab() -> Iterator[Lab]:
    """Client namespace (169.254.77.1) and server namespace (169.254.77.2, all inbound UDP dropped)."""
    with veth_lab() as lab:
        _run(["ip", "netns", "exec", lab.server_ns, "nft", "-f", "-"], stdin=DROP_UDP)
        yield lab
