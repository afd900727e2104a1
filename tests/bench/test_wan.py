"""The WAN emulator end to end: real namespaces, TUN devices, sockets, files."""

import json
import os
import signal
import statistics
import subprocess
import sys

import pytest

from bench import netns
from bench.netns import Hosts
from bench.report import read_bins
from bench.wan import Wan
from tests.bench.conftest import private_hosts
from tests.support.files import sha256

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def hosts():
    with private_hosts("fbt", "10.78.0") as made:
        yield made


def probe(wan: Wan, side: str, *args: str, **kwargs) -> subprocess.Popen:
    return wan.popen(side, [sys.executable, "-m", "bench.probe", *args], cwd=ROOT, text=True, **kwargs)


def started(process: subprocess.Popen) -> subprocess.Popen:
    assert process.stdout.readline().strip() == "READY"
    return process


@pytest.mark.timeout(60)
def test_rtt_and_loss_are_as_configured(hosts, tmp_path):
    stats = tmp_path / "stats.jsonl"
    with Wan(rate_mbit=20, rtt_ms=40, loss_pct=5, hosts=hosts, seed=1, stats_path=str(stats)) as wan:
        echo = started(probe(wan, "b", "echo", "7007", stdout=subprocess.PIPE))
        try:
            client = probe(wan, "a", "rtt", hosts.addr_b, "7007", "400", stdout=subprocess.PIPE)
            result = json.loads(client.communicate(timeout=30)[0])
        finally:
            echo.kill()
            echo.wait()
    rtts = result["rtt_ms"]
    assert 39.5 <= min(rtts) and statistics.median(rtts) <= 48
    # a probe survives the path twice: 1 - 0.95**2 = 9.75 % round-trip loss
    assert 0.04 <= 1 - result["received"] / result["sent"] <= 0.16

    # the meter: A offered every probe to the path ("ab-sent"), about 95 % were delivered ("ab")
    def probe_bytes(direction: str) -> int:
        return sum(n for row in read_bins(stats, direction) for key, n in row["bytes"].items() if key.endswith(">7007"))

    offered, delivered = probe_bytes("ab-sent"), probe_bytes("ab")
    size = 20 + 8 + 4 + 60  # IPv4 + UDP + the probe's sequence number and padding
    # every probe, whole (the last bin used to stay open at exit: FlowMeter.flush)
    assert offered == size * result["sent"]
    assert 0.88 <= delivered / offered <= 0.995


@pytest.mark.timeout(60)
def test_tcp_transfer_is_limited_to_the_bottleneck_and_intact(hosts, tmp_path):
    source, dest = tmp_path / "src.bin", tmp_path / "dst.bin"
    source.write_bytes(os.urandom(3_000_000))
    with Wan(rate_mbit=10, rtt_ms=20, hosts=hosts) as wan:
        sink = started(probe(wan, "b", "sink", "7008", str(dest), stdout=subprocess.PIPE))
        try:
            sender = probe(wan, "a", "send", hosts.addr_b, "7008", str(source), stdout=subprocess.PIPE)
            sent = json.loads(sender.communicate(timeout=30)[0])
            sink.wait(timeout=10)
        finally:
            sink.kill()
            sink.wait()
    assert dest.stat().st_size == source.stat().st_size == sent["bytes"]
    assert sha256(dest) == sha256(source)
    mbit_s = sent["bytes"] * 8 / sent["seconds"] / 1e6
    assert 6.0 <= mbit_s <= 10.0  # payload rate: headers use part of the 10 Mbit/s


@pytest.mark.timeout(60)
def test_teardown_removes_namespaces_devices_and_leftover_processes(hosts):
    with Wan(rate_mbit=None, hosts=hosts) as wan:
        leftover = wan.popen("b", ["sleep", "600"])
        assert netns.exists(hosts.a) and netns.exists(hosts.b)
    assert leftover.wait(timeout=10) != 0
    assert not netns.exists(hosts.a) and not netns.exists(hosts.b)
    assert hosts.prefix not in netns.ip("link").stdout


@pytest.mark.timeout(60)
def test_ctrl_c_tears_down(hosts):
    emulator = subprocess.Popen(
        [sys.executable, "-m", "bench.wan", "--prefix", hosts.prefix, "--subnet", hosts.subnet, "--rtt-ms", "10"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert emulator.stdout.readline().startswith("READY ")
        assert netns.exists(hosts.a)
        emulator.send_signal(signal.SIGINT)
        emulator.wait(timeout=15)
    finally:
        if emulator.poll() is None:
            emulator.kill()
        emulator.stdout.close()
    assert not netns.exists(hosts.a) and not netns.exists(hosts.b)


def blast_across(wan: Wan, hosts: Hosts, mbit: float, seconds: float) -> tuple[dict, dict]:
    """Numbered datagrams A -> B in UDP GSO buffers, counted on B with UDP GRO."""
    counter = started(probe(wan, "b", "count", "7009", stdout=subprocess.PIPE))
    try:
        sender = probe(wan, "a", "blast", hosts.addr_b, "7009", str(mbit), str(seconds), stdout=subprocess.PIPE)
        sent = json.loads(sender.communicate(timeout=30)[0])
        got = json.loads(counter.communicate(timeout=30)[0])
    finally:
        counter.kill()
        counter.wait()
    return sent, got


@pytest.mark.timeout(90)
def test_gso_buffers_cross_whole_yet_each_datagram_meets_the_loss(hosts, tmp_path):
    stats = tmp_path / "stats.jsonl"
    with Wan(rate_mbit=None, loss_pct=10, hosts=hosts, seed=3, stats_path=str(stats)) as wan:
        sent, got = blast_across(wan, hosts, mbit=100, seconds=1.5)
    assert got["damaged"] == 0
    # lost one datagram at a time (about 10 %), not a whole 44-datagram buffer at a time
    assert 0.86 <= got["received"] / sent["sent"] <= 0.94
    # the survivors of a buffer reach the receiving socket together: its GRO hands over several per read
    assert got["most_per_read"] > 1
    # the meter saw every datagram A offered, at its size on the wire
    offered = sum(n for row in read_bins(stats, "ab-sent") for key, n in row["bytes"].items() if key.endswith(">7009"))
    assert offered == sent["sent"] * (sent["size"] + 28)

    # the per-packet forwarder delivers the same datagrams one by one
    with Wan(rate_mbit=None, hosts=hosts, io="plain") as wan:
        sent, got = blast_across(wan, hosts, mbit=50, seconds=1)
    assert got["damaged"] == 0 and got["received"] == sent["sent"] and got["most_per_read"] == 1


def pair_gaps(wan: Wan, hosts: Hosts, seconds: float = 2.0) -> list[float]:
    """Arrival gaps (us) of pairs sent back to back every 10 ms for ``seconds``."""
    receiver = started(probe(wan, "b", "spread", "7011", str(seconds + 1.0), stdout=subprocess.PIPE))
    try:
        sender = probe(wan, "a", "pairs", hosts.addr_b, "7011", str(seconds), "0.01", stdout=subprocess.PIPE)
        sent = json.loads(sender.communicate(timeout=30)[0])
        gaps = json.loads(receiver.communicate(timeout=30)[0])["gaps_us"]
    finally:
        receiver.kill()
        receiver.wait()
    assert len(gaps) >= 0.9 * sent["pairs"]
    return gaps


@pytest.mark.timeout(90)
def test_a_back_to_back_pair_leaves_the_bottleneck_one_packet_apart(hosts, tmp_path):
    """What a capacity estimate reads (docs/benchmarks: the 20:24 entry): the bottleneck serializes a 1,500-byte
    packet in 1,200 us at 10 Mbit/s, so two sent back to back arrive that far apart, on an idle link and beside a
    TCP flow that keeps the queue busy (its packets may fall between a pair: the median holds)."""
    source, dest = tmp_path / "bulk.bin", tmp_path / "dst.bin"
    source.write_bytes(os.urandom(8_000_000))
    with Wan(rate_mbit=10, rtt_ms=20, hosts=hosts) as wan:
        idle = pair_gaps(wan, hosts)
        sink = started(probe(wan, "b", "sink", "7012", str(dest), stdout=subprocess.PIPE))
        try:
            bulk = probe(wan, "a", "send", hosts.addr_b, "7012", str(source), stdout=subprocess.PIPE)
            busy = pair_gaps(wan, hosts)
            bulk.communicate(timeout=30)
            sink.wait(timeout=10)
        finally:
            sink.kill()
            sink.wait()
    assert sha256(dest) == sha256(source)
    assert 1000 <= statistics.median(idle) <= 1400, sorted(idle)[:: len(idle) // 10]
    assert 1000 <= statistics.median(busy) <= 1600, sorted(busy)[:: len(busy) // 10]
