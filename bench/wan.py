"""User-space WAN emulator between two network namespaces.

This kernel has no netem, so delay and loss cannot come from ``tc``.  The
emulator opens two TUN devices, moves one into each namespace (the file
descriptor keeps working after the device moves), gives them point-to-point
addresses, and forwards every IP packet between the two descriptors through
the sans-IO path model of bench/path.py, one model per direction.  A single
``select`` loop (microsecond timeouts) is the only clock.

By default (``--io offload``) the TUN devices take virtio-net headers and UDP
segmentation offload, so a sender's UDP GSO buffer crosses as one read and,
when its datagrams arrive together, one write (bench/tunframe.py): the path
still judges each datagram, but the per-packet system calls and stack passes
are gone.  ``--io plain`` is the one-read-one-write-per-packet forwarder, kept
as the baseline the ceiling benchmark measures against.

Run it as ``python -m bench.wan --rate-mbit 100 --rtt-ms 50 --loss-pct 1``;
it prints one ``READY {...}`` line once both hosts can talk, and deletes the
namespaces (killing what still runs in them) on SIGTERM, Ctrl-C or error.
Benchmarks drive it through the :class:`Wan` context manager.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time

from bench import netns
from bench.meter import FlowMeter
from bench.netns import Hosts
from bench.path import Link, PathSpec
from bench.tunframe import VNET, Burst, frames

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40  # the kernel takes USO for both families or neither
READ_BATCH = 64
READ_SIZE = 65536 + VNET.size
IO_MODES = ("offload", "plain")
DEFAULT_HOSTS = Hosts()  # frozen, so one shared default is safe


def open_tun(name: str, offload: bool) -> int:
    """A TUN device; with ``offload``, frames carry a virtio-net header and the
    kernel may hand over UDP GSO buffers whole (kernels before 6.2 lack USO:
    then it segments them itself and only the checksum is offloaded)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    if offload:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6)
        except OSError:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM)
    return fd


def attach(device: str, ns: str, local: str, peer: str, mtu: int) -> None:
    """Move TUN ``device`` into ``ns`` as a point-to-point link to ``peer``."""
    netns.ip("link", "set", device, "netns", ns)
    netns.ip("-n", ns, "addr", "add", local, "peer", f"{peer}/32", "dev", device)
    netns.ip("-n", ns, "link", "set", device, "mtu", str(mtu), "up")


def forward(fd_a: int, fd_b: int, ab: Link, ba: Link, stats, start: float, offload: bool = True) -> None:
    """Forward packets between the two TUN fds through the two links, forever;
    per-flow bins in ``stats`` count seconds from ``start``: what each direction
    delivered ("ab", "ba") and what host A offered to the path ("ab-sent",
    before loss and the router queue, so retransmissions and losses count).
    Every datagram of a GSO buffer is a packet of its own to the links and meters."""
    clock = time.monotonic
    meters = {"ab": FlowMeter(start), "ba": FlowMeter(start), "ab-sent": FlowMeter(start)}
    sent = meters["ab-sent"]

    def record(direction: str, closed: list[dict]) -> None:
        for row in closed:
            stats.write(json.dumps({"dir": direction, **row}) + "\n")

    routes = ((ab, fd_b, meters["ab"], "ab"), (ba, fd_a, meters["ba"], "ba"))
    incoming = {fd_a: ab, fd_b: ba}
    fds = [fd_a, fd_b]
    write, read = os.write, os.read
    try:
        while True:
            now = clock()
            for link, out, meter, direction in routes:
                segments = link.due(now)
                if not segments:
                    continue
                for frame in frames(segments):
                    try:
                        write(out, frame)
                    except OSError:
                        pass  # the receiving stack refused it: a loss, like on a wire
                if stats is not None:
                    for burst, index in segments:
                        record(direction, meter.count(now, burst.ip, burst.size(index)))
            due = [t for t in (ab.next_due(), ba.next_due()) if t is not None]
            timeout = max(0.0, min(due) - clock()) if due else 0.5
            ready, _, _ = select.select(fds, [], [], timeout)
            for fd in ready:
                link = incoming[fd]
                for _ in range(READ_BATCH):
                    try:
                        burst = Burst(read(fd, READ_SIZE), offload)
                    except BlockingIOError:
                        break
                    # stamped after the read: if this process was descheduled, a packet
                    # may enter the path late, never early (no RTT below the configured one)
                    now = clock()
                    for index in range(burst.count):
                        size = burst.size(index)
                        link.offer(now, (burst, index), size)
                        if stats is not None and fd == fd_a:
                            record("ab-sent", sent.count(now, burst.ip, size))
    finally:
        if stats is not None:
            for direction, meter in meters.items():
                record(direction, meter.flush())


def serve(
    hosts: Hosts,
    ab: Link,
    ba: Link,
    mtu: int,
    stats_path: str | None,
    tcp_cc: str | None = None,
    offload: bool = True,
) -> None:
    """Build the two hosts, announce READY, forward until told to stop."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fds: list[int] = []
    stats = open(stats_path, "w", buffering=1) if stats_path else None
    try:
        for ns in (hosts.a, hosts.b):
            netns.create(ns, tcp_cc)
        tun_a, tun_b = f"{hosts.prefix}-ta"[:15], f"{hosts.prefix}-tb"[:15]
        fds = [open_tun(tun_a, offload), open_tun(tun_b, offload)]
        attach(tun_a, hosts.a, hosts.addr_a, hosts.addr_b, mtu)
        attach(tun_b, hosts.b, hosts.addr_b, hosts.addr_a, mtu)
        start = time.monotonic()
        print(
            "READY "
            + json.dumps({"a": hosts.a, "b": hosts.b, "addr_a": hosts.addr_a, "addr_b": hosts.addr_b, "t0": start}),
            flush=True,
        )
        gc.freeze()  # the loop makes no reference cycles; collections would only stall it
        gc.disable()
        forward(fds[0], fds[1], ab, ba, stats, start, offload)
    finally:
        for fd in fds:
            os.close(fd)
        for ns in (hosts.a, hosts.b):
            netns.delete(ns)
        if stats is not None:
            stats.write(json.dumps({"final": {"ab": vars(ab.counters), "ba": vars(ba.counters)}}) + "\n")
            stats.close()


class Wan:
    """Context manager: an emulator process and its two hosts.

    >>> with Wan(rate_mbit=100, rtt_ms=50, loss_pct=1) as wan:
    ...     wan.run("b", ["iperf3", "-s", "-1", "-D"])
    """

    def __init__(
        self,
        rate_mbit: float | None,
        rtt_ms: float = 0.0,
        loss_pct: float = 0.0,
        hosts: Hosts = DEFAULT_HOSTS,
        queue_bytes: int | None = None,
        seed: int | None = None,
        stats_path: str | None = None,
        mtu: int = 1500,
        tcp_cc: str | None = None,
        io: str = "offload",
    ) -> None:
        self.hosts = hosts
        self.stats_path = stats_path
        self.command = [
            sys.executable,
            "-m",
            "bench.wan",
            "--prefix",
            hosts.prefix,
            "--subnet",
            hosts.subnet,
            "--rtt-ms",
            str(rtt_ms),
            "--loss-pct",
            str(loss_pct),
            "--mtu",
            str(mtu),
            "--io",
            io,
        ]
        if rate_mbit:
            self.command += ["--rate-mbit", str(rate_mbit)]
        if queue_bytes:
            self.command += ["--queue-bytes", str(queue_bytes)]
        if seed is not None:
            self.command += ["--seed", str(seed)]
        if stats_path:
            self.command += ["--stats", stats_path]
        if tcp_cc:
            self.command += ["--tcp-cc", tcp_cc]
        self.process: subprocess.Popen | None = None
        self.t0 = 0.0

    def __enter__(self) -> Wan:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True, cwd=root)
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"WAN emulator failed to start (exit {self.process.poll()})")
        self.t0 = json.loads(line[6:])["t0"]
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        for ns in (self.hosts.a, self.hosts.b):
            if netns.exists(ns):
                netns.delete(ns)

    def cpu_seconds(self) -> float:
        """CPU time the emulator process has used so far (user + system)."""
        fields = open(f"/proc/{self.process.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def ns(self, side: str) -> str:
        return {"a": self.hosts.a, "b": self.hosts.b}[side]

    def popen(self, side: str, command: list[str], **kwargs) -> subprocess.Popen:
        """Start ``command`` on host ``side`` ("a" or "b")."""
        return subprocess.Popen(netns.argv(self.ns(side), command), **kwargs)

    def run(self, side: str, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(netns.argv(self.ns(side), command), **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", default="fasp", help="namespaces PREFIX-a and PREFIX-b")
    parser.add_argument("--subnet", default="10.77.0", help="hosts get SUBNET.1 and SUBNET.2")
    parser.add_argument("--rate-mbit", type=float, default=None, help="bottleneck, each way (default: none)")
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--loss-pct", type=float, default=0.0, help="random loss, each way")
    parser.add_argument("--queue-bytes", type=int, default=None, help="router queue (default: one BDP)")
    parser.add_argument("--mtu", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--tcp-cc", default=None, help="TCP congestion control inside both hosts")
    parser.add_argument(
        "--io", choices=IO_MODES, default="offload", help="TUN I/O: GSO buffers whole, or one packet per system call"
    )
    parser.add_argument("--stats", default=None, help="write per-flow delivered bytes (JSON lines) here")
    args = parser.parse_args(argv)
    if args.rate_mbit:
        spec = PathSpec.wan(args.rate_mbit * 1e6, args.rtt_ms / 1000, args.loss_pct / 100, args.mtu)
        if args.queue_bytes:
            spec = PathSpec(spec.rate_bps, spec.delay_s, spec.loss, args.queue_bytes)
    else:
        spec = PathSpec(None, args.rtt_ms / 2000, args.loss_pct / 100)
    rng = random.Random(args.seed)
    links = Link(spec, random.Random(rng.random())), Link(spec, random.Random(rng.random()))
    try:
        serve(Hosts(args.prefix, args.subnet), *links, args.mtu, args.stats, args.tcp_cc, args.io == "offload")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
