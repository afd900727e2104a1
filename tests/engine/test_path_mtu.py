"""Path MTU discovery on real paths: an upload between two network namespaces of the test's own, joined by a
veth pair whose MTU the test sets. The engine starts at 1,200-byte datagrams and probes; on a 9,000-byte path
it ends up sending jumbo datagrams, on a 1,500-byte path datagrams that fill it, on a 1,280-byte path it still
completes (the kernel refuses what does not
fit, EMSGSIZE, and says the path MTU). What arrives is checked by size and sha256; the datagram sizes by the
server's veth counters (bytes / packets received: the upload's DATA, nearly all of it)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.engine.helpers import remote
from tests.support.files import assert_same_file, random_file
from tests.support.netns import SERVER_ADDR, Lab, veth_lab
from tests.support.programs import ENGINE
from tests.support.servers import start_fasp_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not shutil.which("ip"), reason="needs ip"),
]
SIZE = 24 << 20


@pytest.mark.parametrize("mtu", [9000, 1500, 1280])
def test_an_upload_fills_the_path_mtu(tmp_path, mtu):
    src = random_file(tmp_path / "big.bin", SIZE)
    with veth_lab(mtu) as lab:
        with start_fasp_server(tmp_path / "srv", host=SERVER_ADDR, wrapper=Lab.wrap(lab.server_ns, [])) as server:
            before = lab.received()
            done = subprocess.run(
                Lab.wrap(lab.client_ns, [*ENGINE, "-q", "-P", str(server.port), "-l", "400000", str(src)])
                + [remote(server, "/")],
                env=server.env(),
                capture_output=True,
                timeout=90,
            )
            after = lab.received()
            assert done.returncode == 0, done.stderr.decode()
            assert_same_file(src, server.docroot / "big.bin")
    rx_bytes, rx_packets = after[0] - before[0], after[1] - before[1]
    mean = rx_bytes / rx_packets
    if mtu == 9000:
        assert mean > 8000, (rx_bytes, rx_packets)  # nearly all datagrams jumbo, far beyond a 1,500-byte MTU
    elif mtu == 1500:  # 1,472-byte datagrams fill it (the old fixed 1,400 would average under 1,442)
        assert 1480 < mean <= mtu + 14, (rx_bytes, rx_packets)
    else:
        assert 1200 < mean <= mtu + 14, (rx_bytes, rx_packets)  # the largest that fits, an Ethernet header each
