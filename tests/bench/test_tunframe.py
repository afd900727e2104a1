"""GSO buffers as the TUN device hands them over, cut into datagrams and rejoined."""

import struct

from bench.meter import flow_key
from bench.tunframe import GSO_NONE, GSO_UDP_L4, NEEDS_CSUM, VNET, Burst, frames, ones_sum

SEG = 1400


def udp_gso_frame(payload: bytes, seg: int = SEG, v6: bool = False) -> bytes:
    """A frame as a TUN device with USO hands it over: virtio-net header, one
    IP/UDP header for the whole buffer, ``payload`` to be cut every ``seg`` bytes."""
    udp_len = 8 + len(payload)
    if v6:
        ip = struct.pack("!IHBB16s16s", 6 << 28, udp_len, 17, 64, bytes(15) + b"\1", bytes(15) + b"\2")
    else:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 7, 0, 64, 17, 0, b"\n\x4f\0\1", b"\n\x4f\0\2")
    udp = struct.pack("!HHHH", 4000, 33001, udp_len, 0)
    return VNET.pack(NEEDS_CSUM, GSO_UDP_L4, len(ip) + 8, seg, len(ip), 6) + ip + udp + payload


def datagrams(frame: bytes) -> list[bytes]:
    """The datagram payloads a frame we write delivers (as the kernel would cut it)."""
    flags, gso_type, _, gso_size, csum_start, csum_offset = VNET.unpack_from(frame)
    ip = frame[VNET.size :]
    offset = (ip[0] & 0x0F) * 4 if ip[0] >> 4 == 4 else 40
    payload = ip[offset + 8 :]
    assert struct.unpack_from("!H", ip, offset + 4)[0] == 8 + len(payload)  # UDP length: the whole run
    if ip[0] >> 4 == 4:
        assert struct.unpack_from("!H", ip, 2)[0] == len(ip) and ones_sum(ip[:offset]) == 0xFFFF
        pseudo = ip[12:20]
    else:
        assert struct.unpack_from("!H", ip, 4)[0] == 8 + len(payload)
        pseudo = ip[8:40]
    assert flags == NEEDS_CSUM and (csum_start, csum_offset) == (offset, 6)
    assert struct.unpack_from("!H", ip, offset + 6)[0] == ones_sum(pseudo + struct.pack("!HH", 17, 8 + len(payload)))
    if gso_type == GSO_NONE:
        return [payload]
    assert gso_type == GSO_UDP_L4 and gso_size == SEG
    return [payload[i : i + gso_size] for i in range(0, len(payload), gso_size)]


def test_a_gso_buffer_is_one_datagram_per_segment_to_the_path_and_meter():
    payload = bytes(range(256)) * 20  # 5120 bytes: three full segments and 920
    burst = Burst(udp_gso_frame(payload), vnet=True)
    assert burst.count == 4
    assert [burst.size(i) for i in range(4)] == [28 + SEG] * 3 + [28 + 920]
    assert flow_key(burst.ip) == "udp:4000>33001"


def test_segments_arriving_together_leave_as_the_buffer_itself():
    frame = udp_gso_frame(bytes(5000))
    burst = Burst(frame, vnet=True)
    assert list(frames([(burst, i) for i in range(burst.count)])) == [frame]


def test_a_loss_splits_the_buffer_into_runs_carrying_exactly_the_survivors():
    for v6 in (False, True):
        payload = b"".join(bytes([n]) * SEG for n in range(6)) + b"tail"
        burst = Burst(udp_gso_frame(payload, v6=v6), vnet=True)
        assert burst.count == 7
        survivors = [0, 1, 3, 5, 6]  # 2 and 4 lost on the way
        out = list(frames([(burst, i) for i in survivors]))
        assert len(out) == 3  # [0, 1], [3], [5, 6]
        delivered = [d for frame in out for d in datagrams(frame)]
        assert delivered == [bytes([0]) * SEG, bytes([1]) * SEG, bytes([3]) * SEG, bytes([5]) * SEG, b"tail"]


def test_runs_of_two_buffers_never_merge():
    a, b = Burst(udp_gso_frame(bytes(2 * SEG)), vnet=True), Burst(udp_gso_frame(bytes(2 * SEG)), vnet=True)
    assert list(frames([(a, 0), (a, 1), (b, 0), (b, 1)])) == [a.frame, b.frame]


def test_other_packets_pass_unchanged():
    tcp = VNET.pack(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 16) + bytes([0x45]) + bytes(59)
    plain = bytes([0x45]) + bytes(99)
    for frame, vnet in ((tcp, True), (plain, False)):
        burst = Burst(frame, vnet)
        assert burst.count == 1 and burst.size(0) == len(frame) - (VNET.size if vnet else 0)
        assert list(frames([(burst, 0)])) == [frame]
