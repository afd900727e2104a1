"""-X and --auto-detect-capacity between real engines, judged on the wire of the impairment relay.

The server's engines listen on 127.0.0.2 at the relay's port, so a client that dials 127.0.0.1 at that
port goes through the relay (tests/support/relay.py), which drops, delays and rate-limits datagrams and
sees each one: type (header byte 1, in clear) and size.
"""

from __future__ import annotations

import time

import pytest

from fasp.datapath import datagram
from fasp.datapath.connection import BURST
from fasp.datapath.recvstate import MIN_FEEDBACK_BYTES
from tests.engine.helpers import fasp_args, remote, run_ascp
from tests.support.files import assert_same_file, random_file, sha256
from tests.support.relay import BIN
from tests.support.relayed import paced_mbit, relayed_server, reset

FEEDBACK_OVERHEAD = (
    datagram.CONTROL_HEADER_SIZE + datagram.TAG_SIZE
)  # a FEEDBACK datagram is its body plus these 31 bytes


@pytest.fixture(scope="module")
def relayed(tmp_path_factory):
    with relayed_server(tmp_path_factory.mktemp("relayed")) as pair:
        yield pair


def transfer(server, tmp_path, direction: str, size: int, *flags: str, timeout: float = 60, name: str = "f"):
    """Upload or download one random file of ``size`` bytes with ``flags``; checks the bytes that arrived."""
    if direction == "upload":
        src = random_file(tmp_path / f"{name}.bin", size)
        args, dest = [str(src), remote(server, f"/{name}.bin")], server.docroot / f"{name}.bin"
    else:
        src = random_file(server.docroot / f"{name}.bin", size)
        (tmp_path / name).mkdir()
        args, dest = [remote(server, f"/{name}.bin"), str(tmp_path / name)], tmp_path / name / f"{name}.bin"
    digest = sha256(src)
    result = run_ascp(fasp_args(server, *flags, *args), server.env(), timeout=timeout)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert_same_file(src, dest, digest)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_retransmission_requests_stay_within_x(relayed, tmp_path, direction):
    server, relay = relayed
    towards_sender = "down" if direction == "upload" else "up"  # the receiver's feedback
    sizes = {}
    for x in (100, None):
        seen = reset(relay, loss=0.05)
        flags = ["-l", "100000", "-Z", "1400"] + (["-X", str(x)] if x else [])  # 1,400: loopback's MTU would
        # allow 8,972-byte datagrams, and 3 MiB of them would leave too few holes to request
        transfer(server, tmp_path, direction, 3 << 20, *flags, name=f"x{x}")
        sizes[x] = [n for d, kind, n in seen if d == towards_sender and kind == datagram.FEEDBACK]
        assert relay.counts.dropped > 50  # holes happened, so requests did
    assert max(sizes[100]) <= 100 + FEEDBACK_OVERHEAD
    assert max(sizes[100]) >= MIN_FEEDBACK_BYTES + FEEDBACK_OVERHEAD  # ranges were requested all the same
    assert max(sizes[None]) > 100 + FEEDBACK_OVERHEAD  # without -X they grow larger


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_fixed_percent_of_the_measured_capacity(relayed, tmp_path, direction, listener):
    """A 40 Mbit/s bottleneck: 50 % of the capacity is about 20 Mbit/s on the wire (-l 50 alone would be
    50 kbit/s, and the 6 MiB would take 16 minutes)."""
    server, relay = relayed
    data_way = "up" if direction == "upload" else "down"
    reset(relay, rate_mbit=40, delay=0.005)
    transfer(
        server,
        tmp_path,
        direction,
        6 << 20,
        "--auto-detect-capacity",
        "-l",
        "50",
        "--policy",
        "fixed",
        "-M",
        str(listener.port),
        timeout=40,
    )
    bins = sorted(relay.counts.bins[data_way])
    first, last = bins[0] * BIN, bins[-1] * BIN
    assert last - first > 1.5, (
        [(b, relay.counts.bins[data_way][b] * 8 / 1e5) for b in bins],
        [(f.int("TargetRate"), f.int("Rate")) for f in listener.of("STATS")],
    )
    # the rate on the wire by the sender's clock: a sender descheduled (two test files beside on 2 cores) cannot
    # make up what its token bucket did not save (BURST at most), and the relay's wall clock counted that as a
    # slower rate (5.8 Mbit/s one run)
    measured = paced_mbit(relay, data_way, first + 0.8, last - 0.2, BURST)
    assert 13 <= measured <= 27, (measured, relay.counts.mbit(data_way, first + 0.8, last - 0.2))
    targets = [f.int("TargetRate") for f in listener.of("STATS")]
    assert targets and 13_000 <= targets[-1] <= 27_000, targets  # the measured capacity, reported


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_a_rate_command_in_such_a_session_is_a_percent(relayed, tmp_path, listener, spawn, direction):
    """RATE Rate=25 halves the 50 % on the wire (as kbit/s it would crawl at 25 kbit/s); in a download
    the change travels to the remote sender. 8 MiB: on a busy host the STATS that let the test send RATE came
    late, and with 5 MiB the transfer sometimes ended within a second of the change."""
    server, relay = relayed
    reset(relay, rate_mbit=40, delay=0.005)
    if direction == "upload":
        src, way = random_file(tmp_path / "steer.bin", 8 << 20), "up"
        args, dest = [str(src), remote(server, "/steer.bin")], server.docroot / "steer.bin"
    else:
        src, way = random_file(server.docroot / "steer-down.bin", 8 << 20), "down"
        args, dest = [remote(server, "/steer-down.bin"), str(tmp_path)], tmp_path / "steer-down.bin"
    proc = spawn(
        fasp_args(server, "--auto-detect-capacity", "-l", "50", "--policy", "fixed", "-M", str(listener.port), *args),
        server.env(),
    )
    known = listener.wait_for(lambda f: f.type == "STATS" and f.int("TargetRate") < 100_000, timeout=30)
    if known is None:
        proc.kill()
    assert known is not None, (listener.types(), proc.communicate()[1].decode(errors="replace")[-2000:])
    listener.send("RATE", {"Rate": "25"})
    changed = time.monotonic()
    _, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert_same_file(src, dest)
    last = max(relay.counts.bins[way]) * BIN
    assert last - changed > 1.0
    measured = paced_mbit(relay, way, changed + 0.5, last - 0.2, BURST)  # (as above)
    assert 6 <= measured <= 14, (measured, relay.counts.mbit(way, changed + 0.5, last - 0.2))
    after = [f.int("TargetRate") for t, f in listener.events if f.type == "STATS" and t > changed + 0.5]
    assert after and 6_000 <= after[-1] <= 14_000, after


@pytest.mark.timeout(120)
def test_fair_does_not_flood_a_buffer_smaller_than_its_alpha(relayed, tmp_path):
    """FAIR at the default target (1 Gbit/s) through a 20 Mbit/s bottleneck, 50 ms RTT, whose queue holds
    one BDP (25 ms each way: 62 KB, a quarter of FAIR's alpha): FAST alone never reached its queue and sent
    twice the link and more for good (on the emulator: 2 to 7 times the file's bytes offered); a probe at what
    arrives shows the loss is its own and FAIR settles at the link rate."""
    server, relay = relayed
    seen = reset(relay, rate_mbit=20, delay=0.025, queue_ms=25)
    size = 12 << 20
    transfer(server, tmp_path, "upload", size, "--policy", "fair", "-Z", "1400", timeout=60, name="shallow")
    offered = sum(n for d, kind, n in seen if d == "up" and kind == datagram.DATA)
    assert offered < 1.4 * size, (offered / size, relay.counts.overflowed)
