"""Per-flow byte counts of what a path delivered, in fixed time bins.

The emulator sees every packet that crosses the bottleneck, which makes it
a neutral judge of how competing flows share it: no tool's own report is
trusted.  Pure: packets and times in, JSON-ready records out.
"""

from __future__ import annotations

import struct
from collections import Counter

_PROTOS = {6: "tcp", 17: "udp", 1: "icmp"}


def flow_key(packet: bytes | memoryview) -> str:
    """``proto:src_port>dst_port`` for IPv4 TCP/UDP, else the protocol name."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return "other"
    proto = packet[9]
    name = _PROTOS.get(proto, f"ip{proto}")
    header = (packet[0] & 0x0F) * 4
    if proto in (6, 17) and len(packet) >= header + 4:
        sport, dport = struct.unpack_from("!HH", packet, header)
        return f"{name}:{sport}>{dport}"
    return name


class FlowMeter:
    """Bytes delivered per flow per bin of ``bin_s`` seconds since ``start``."""

    def __init__(self, start: float, bin_s: float = 0.1) -> None:
        self.start = start
        self.bin_s = bin_s
        self._bin = 0
        self._bytes: Counter[str] = Counter()

    def count(self, now: float, packet: bytes | memoryview, size: int | None = None) -> list[dict]:
        """Count one delivered packet of ``size`` bytes (default: all of ``packet``,
        which may be just its headers); returns the bins that closed before it."""
        closed = self.tick(now)
        self._bytes[flow_key(packet)] += len(packet) if size is None else size
        return closed

    def tick(self, now: float) -> list[dict]:
        """Close every bin that ended by ``now`` (empty bins are skipped)."""
        current = int((now - self.start) / self.bin_s)
        closed = []
        if current > self._bin:
            if self._bytes:
                closed.append({"t": round(self._bin * self.bin_s, 6), "bytes": dict(self._bytes)})
            self._bytes = Counter()
            self._bin = current
        return closed

    def flush(self) -> list[dict]:
        """Close the open bin (at the end of a run).  Not ``tick`` at the bin's end:
        ``(bin + 1) * bin_s / bin_s`` may round below ``bin + 1`` and keep it open."""
        closed = [{"t": round(self._bin * self.bin_s, 6), "bytes": dict(self._bytes)}] if self._bytes else []
        self._bytes = Counter()
        self._bin += 1
        return closed
