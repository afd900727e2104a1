"""Per-flow delivered bytes, binned in time."""

import struct

from bench.meter import FlowMeter, flow_key


def ipv4(proto: int, sport: int, dport: int, payload: int = 100) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + payload, 0, 0, 64, proto, 0, bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2])
    )
    return header + struct.pack("!HH", sport, dport) + bytes(4 + payload)


def test_flow_key_names_protocol_and_ports():
    assert flow_key(ipv4(17, 4000, 33001)) == "udp:4000>33001"
    assert flow_key(ipv4(6, 22, 50000)) == "tcp:22>50000"
    assert flow_key(ipv4(1, 0, 0)) == "icmp"
    assert flow_key(b"\x60" + bytes(60)) == "other"  # IPv6
    assert flow_key(b"\x45") == "other"


def test_bins_close_in_order_and_skip_silence():
    meter = FlowMeter(start=10.0, bin_s=0.5)
    udp, tcp = ipv4(17, 1, 2), ipv4(6, 3, 4)
    assert meter.count(10.1, udp) == []
    assert meter.count(10.2, tcp) == []
    closed = meter.count(11.7, udp)  # bins 1 and 2 were silent
    assert closed == [{"t": 0.0, "bytes": {"udp:1>2": len(udp), "tcp:3>4": len(tcp)}}]
    assert meter.flush() == [{"t": 1.5, "bytes": {"udp:1>2": len(udp)}}]
    assert meter.flush() == []


def test_flush_closes_the_open_bin_whatever_the_clock_reads():
    # monotonic clocks read large values; start + (bin + 1) * bin_s - start may round below the bin's end
    missed = 0
    for i in range(200):
        meter = FlowMeter(start=40_000.0 + i * 0.0137, bin_s=0.1)
        meter.count(meter.start + 2.05, ipv4(17, 1, 2))
        missed += meter.flush() == []
    assert missed == 0
