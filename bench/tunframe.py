"""What one TUN read carries, cut into the packets the path model sees.

With ``IFF_VNET_HDR`` and UDP segmentation offload (``TUN_F_USO4``/``6``) the kernel
hands the emulator a sender's UDP GSO buffer whole: one read, one virtio-net
header, one IP/UDP header and up to 64 KiB of equal segments, instead of one
read per datagram.  The path still judges every datagram on its own (loss,
queue, serialization), so a :class:`Burst` names its segments, and
:func:`frames` joins the segments that reach the far end together back into
as few writes as possible: a whole buffer unchanged, or a run of it with a
fresh header (the kernel finishes the UDP checksum: ``NEEDS_CSUM``).  The
receiving socket, if it asked for ``UDP_GRO``, then gets the run in one
``recvmsg``.  Pure: bytes in, bytes out; bench/wan.py owns the descriptors.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

# struct virtio_net_hdr (little-endian on the hosts we run on): flags, gso_type,
# hdr_len, gso_size, csum_start, csum_offset
VNET = struct.Struct("<BBHHHH")
NEEDS_CSUM = 1
GSO_NONE = 0
GSO_UDP_L4 = 5
UDP = 17
UDP_HEADER = 8
_U16 = struct.Struct("!H")


class Burst:
    """One TUN read: ``count`` segments of one flow; segment ``i`` is
    ``header`` bytes of IP/UDP header plus its slice of the payload."""

    __slots__ = ("count", "frame", "header", "ip", "payload", "seg", "vnet")

    def __init__(self, frame: bytes, vnet: bool) -> None:
        self.frame = frame
        self.vnet = vnet
        start = VNET.size if vnet else 0
        self.ip = memoryview(frame)[start:]  # what the meter reads its flow from
        self.count, self.seg, self.header, self.payload = 1, 0, len(self.ip), 0
        if vnet:
            _, gso_type, _, gso_size, _, _ = VNET.unpack_from(frame)
            ip = self.ip
            if gso_type == GSO_UDP_L4 and gso_size and len(ip) >= 40 and l4_offset(ip):
                self.header = l4_offset(ip) + UDP_HEADER
                self.payload = len(ip) - self.header
                self.seg = gso_size
                self.count = max(1, -(-self.payload // gso_size))

    def size(self, index: int) -> int:
        """Bytes segment ``index`` occupies on the wire (IP header included)."""
        if self.count == 1:
            return len(self.ip)
        if index < self.count - 1:
            return self.header + self.seg
        return self.header + self.payload - self.seg * (self.count - 1)

    def frame_of(self, first: int, stop: int) -> bytes:
        """The TUN frame carrying segments ``[first, stop)``."""
        if first == 0 and stop == self.count:
            return self.frame
        ip = self.ip
        ihl = self.header - UDP_HEADER
        body = ip[self.header + first * self.seg : self.header + min(stop * self.seg, self.payload)]
        udp_len = UDP_HEADER + len(body)
        head = bytearray(ip[: self.header])
        if ip[0] >> 4 == 4:
            _U16.pack_into(head, 2, ihl + udp_len)
            head[10:12] = b"\0\0"
            _U16.pack_into(head, 10, ~ones_sum(head[:ihl]) & 0xFFFF)
            addresses = bytes(head[12:20])
        else:
            _U16.pack_into(head, 4, udp_len)
            addresses = bytes(head[8:40])
        _U16.pack_into(head, ihl + 4, udp_len)
        # NEEDS_CSUM wants the pseudo-header sum (not inverted) in the checksum field
        _U16.pack_into(head, ihl + 6, ones_sum(addresses + _U16.pack(UDP) + _U16.pack(udp_len)))
        if stop - first > 1:
            vnet = VNET.pack(NEEDS_CSUM, GSO_UDP_L4, self.header, self.seg, ihl, 6)
        else:
            vnet = VNET.pack(NEEDS_CSUM, GSO_NONE, 0, 0, ihl, 6)
        return vnet + bytes(head) + bytes(body)


def l4_offset(ip: memoryview) -> int:
    """Where the UDP header starts in an IPv4 or IPv6 packet (no extension
    headers: a UDP socket's GSO buffers have none), or 0 if it is not UDP."""
    if ip[0] >> 4 == 4 and ip[9] == UDP:
        return (ip[0] & 0x0F) * 4
    if ip[0] >> 4 == 6 and ip[6] == UDP:
        return 40
    return 0


def ones_sum(data: bytes | bytearray) -> int:
    """The 16-bit ones' complement sum of ``data`` (even length), folded."""
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def frames(segments: Iterable[tuple[Burst, int]]) -> Iterator[bytes]:
    """TUN frames for delivered ``(burst, index)`` segments, in order: each run of
    consecutive segments of one burst becomes one frame."""
    burst: Burst | None = None
    first = stop = 0
    for item, index in segments:
        if item is burst and index == stop:
            stop += 1
            continue
        if burst is not None:
            yield burst.frame_of(first, stop)
        burst, first, stop = item, index, index + 1
    if burst is not None:
        yield burst.frame_of(first, stop)
