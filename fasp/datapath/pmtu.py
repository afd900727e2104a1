"""Datagram packetization layer path MTU discovery (RFC 8899's DPLPMTUD) for one direction (sans-IO).

A connection starts with datagrams every path carries (:data:`BASE`, RFC 8899's BASE_PLPMTU for UDP) and
probes for larger ones with padded PROBE datagrams that the peer acknowledges: a size counts only once a
probe of it arrived, so a path that drops what it cannot carry (no ICMP) is found as well as one whose
kernel refuses (EMSGSIZE: the local link, or a router's "packet too big" the kernel remembered; the socket
sets IP_PMTUDISC_DO). The first probe is the largest size allowed, and so is the first after a refusal
that names the kernel's path MTU (the driver passes it along): where the kernel knows, one round trip
settles it. Past that, as RFC 8899 suggests, the search tries the common MTU plateaus below the ceiling,
largest first, each until it arrives or is lost :data:`MAX_PROBES` times; it ends at the largest plateau
that arrived. A refused datagram no larger than the size in use means the path shrank: the size drops at once, to the
path MTU the kernel names, else to the base, and the search resumes from there.
"""

from __future__ import annotations

from fasp.datapath.datagram import IP_UDP_HEADERS  # a path MTU is the UDP payload plus these

BASE = 1200  # UDP payload bytes every IPv4 and IPv6 path carries (RFC 8899, BASE_PLPMTU)
MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4
JUMBO = 9000 - IP_UDP_HEADERS  # the largest size searched for blind: a jumbo frame's. Beyond it only where the kernel
# says its route carries more (loopback's 64 KiB, :meth:`PathMtu.widen`): there each datagram costs the receiver's
# Python the same whatever its size (GSO and GRO batch only the system calls), so 64 KiB ones cut its CPU per byte
ETHERNET = 1500 - IP_UDP_HEADERS  # the least a rate lowers the datagram size to (:func:`paced_limit`)
PACED_S = 0.0005  # a datagram carries at most this long of sending at the target rate (:func:`paced_limit`)
MAX_PROBES = 3  # losses of one probe size before it counts as too large
PLATEAUS = tuple(mtu - IP_UDP_HEADERS for mtu in (9000, 1500, 1492, 1400, 1280))  # common MTUs (jumbo, Ethernet, PPPoE,
# tunnels, IPv6 minimum) as UDP payloads
SMALLEST = 296  # the smallest datagram the engine sends (ascp's smallest -Z)


def paced_limit(rate_bps: float) -> int:
    """The largest datagram worth sending at ``rate_bps``: PACED_S of it, never under an Ethernet frame's. The
    pacer spaces datagrams by their size, so a 64 KiB one at 800 kbit/s is 0.65 s of silence, a rate's change
    shows late and unevenly, and a small file is a handful of datagrams; from ~1 Gbit/s up (loopback) a
    datagram may be the largest the path carries."""
    return max(ETHERNET, min(int(rate_bps / 8 * PACED_S), MAX_DATAGRAM))


class PathMtu:
    """The datagram size one end sends (``size``), raised as probes of larger sizes are acknowledged."""

    def __init__(self, ceiling: int = JUMBO, floor: int = BASE) -> None:
        self.size = min(floor, ceiling)
        self._hi = ceiling  # the largest size not ruled out
        self._probe: tuple[int, float] | None = None  # (size, sent at) awaiting its acknowledgement
        self._lost = 0  # consecutive losses of the probe size
        self._topped = False  # the ceiling itself has been tried (then: the plateaus below it)

    def _candidate(self) -> int | None:
        """The next size to probe: the ceiling first, then the largest plateau between size and ceiling."""
        if not self._topped:
            return self._hi if self._hi > self.size else None
        return next((p for p in PLATEAUS if self.size < p <= self._hi), None)

    @property
    def searching(self) -> bool:
        return self._probe is not None or self._candidate() is not None

    def next_probe(self, now: float, timeout: float) -> int | None:
        """The size of a probe to send now, or None (one probe at a time, each given ``timeout``)."""
        if self._probe is not None:
            tried, at = self._probe
            if now < at + timeout:  # as due() computes it
                return None
            self._probe = None
            self._lost += 1
            if self._lost >= MAX_PROBES:
                self._lower(tried - 1, trusted=False)
        size = self._candidate()
        if size is None:
            return None
        self._probe = (size, now)
        return size

    def due(self, timeout: float) -> float | None:
        """When :meth:`next_probe` has something to do: the probe in flight's timeout, 0.0 for at once,
        None once the search is over."""
        if self._probe is not None:
            return self._probe[1] + timeout
        return 0.0 if self.searching else None

    def widen(self, path_max: int | None) -> None:
        """The kernel's route towards the peer carries UDP payloads of ``path_max`` bytes: above JUMBO (loopback),
        the search starts there (up to MAX_DATAGRAM). Only before the first probe: a search under way keeps
        what it learnt."""
        if path_max is not None and self._probe is None and not self._topped and self.size <= self._hi:
            self._hi = max(self._hi, min(path_max, MAX_DATAGRAM))

    def on_acknowledged(self, size: int) -> bool:
        """A probe of ``size`` arrived at the peer; whether the datagram size grew."""
        if self._probe is not None and self._probe[0] <= size:
            self._probe, self._lost = None, 0
            self._topped = True
        if self.size < size <= self._hi:
            self.size = size
            return True
        return False

    def on_refused(self, size: int, path_max: int | None) -> None:
        """The kernel refused a datagram of ``size`` (EMSGSIZE); ``path_max``: the largest UDP payload its
        path MTU allows, if known."""
        ceiling = size - 1 if path_max is None else min(size - 1, path_max)
        if self._probe is not None and self._probe[0] == size:
            self._probe = None
        self._lower(ceiling, trusted=path_max is not None)
        self._topped = path_max is None  # a known path MTU is worth one try as it is

    def _lower(self, ceiling: int, *, trusted: bool) -> None:
        """Nothing above ``ceiling`` fits; a size in use above it falls to it if the kernel named it
        (``trusted``), else to the base, and the search starts again from there."""
        self._hi = min(self._hi, max(ceiling, SMALLEST))
        if self.size > self._hi:
            self.size = self._hi if trusted else min(BASE, self._hi)
        self._lost = 0
        self._topped = True
