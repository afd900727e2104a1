"""The data path cut (every UDP packet into the server's network namespace dropped by nftables) for less and
for more than the timeouts: a short cut is ridden out, a long one ends with 40/16, and -k 2 then finishes.

The client and fasp-server run in two namespaces of the test's own (tests/support/netns.py), so the firewall
touches nothing else on the machine. The SSH connection (TCP) stays up throughout."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.engine.helpers import remote
from tests.faults.conftest import PEER_S, STALL_S
from tests.faults.helpers import finish
from tests.support.files import assert_same_file, random_file
from tests.support.netns import DROP_UDP, SERVER_ADDR, Lab, udp_blocked_lab
from tests.support.programs import ENGINE
from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not shutil.which("nft") or not shutil.which("ip"), reason="needs nftables, ip"),
]
SIZE = 16 << 20


@pytest.fixture(scope="module")
def lab():
    with udp_blocked_lab() as lab:
        _udp(lab, True)
        yield lab


def _udp(lab: Lab, flows: bool) -> None:
    """Let UDP into the server's namespace (the drop table gone, if it was there), or drop all of it again."""
    argv = Lab.wrap(lab.server_ns, ["nft", "delete", "table", "inet", "fasp_test"] if flows else ["nft", "-f", "-"])
    subprocess.run(argv, input=None if flows else DROP_UDP, text=True, check=not flows, capture_output=True)


def _ascp(lab: Lab, server, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        Lab.wrap(lab.client_ns, [*ENGINE, "-q", "-P", str(server.port), *args]),
        env=server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("seconds", [1.0, max(STALL_S, PEER_S) + 2])
def test_data_path_cut(lab, tmp_path, record, seconds):
    src = random_file(tmp_path / "cut.bin", SIZE)
    with start_fasp_server(tmp_path / "srv", host=SERVER_ADDR, wrapper=Lab.wrap(lab.server_ns, [])) as server:
        dest = server.docroot / "cut.bin"
        started = time.monotonic()
        proc = _ascp(lab, server, "-l", "40000", "-k", "2", str(src), remote(server, "/"))
        try:
            got_going = wait_until(lambda: dest.exists() and dest.stat().st_size > 2 << 20, 15)
            assert got_going, "the transfer never got going"
            cut = time.monotonic()
            _udp(lab, False)
            if seconds < min(STALL_S, PEER_S):
                time.sleep(seconds)
                _udp(lab, True)
                out = finish(proc, started)
                assert out.code == 0, out
                assert_same_file(src, dest)
                record(
                    f"data path (UDP) cut {seconds:g} s, under the timeouts",
                    "network",
                    0,
                    "(none: the transfer finished)",
                    None,
                    "none needed: sha256 equal",
                )
                return
            out = finish(proc, started, timeout=seconds + 5)
            took = time.monotonic() - cut
        finally:
            _udp(lab, True)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert out.code in (16, 40), out
        assert took < min(STALL_S, PEER_S) + 2, took
        row = record(
            f"data path (UDP) cut for good (> {max(STALL_S, PEER_S):g} s)", "network", out.code, out.message, took
        )
        again = _ascp(lab, server, "-k", "2", str(src), remote(server, "/"))
        out = finish(again, time.monotonic())
        assert out.code == 0, out
        assert_same_file(src, dest)
        row["recovery"] = "-k 2 once UDP flows again: sha256 equal"
