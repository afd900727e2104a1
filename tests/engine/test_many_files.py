"""Many small files: their control messages share writes, seen in the system calls of the real engines, and
their DATA costs the link no more than the datagram layout says, seen on the impairment relay's wire.

Both engines run under strace (the server's through fasp-server's --engine-command). A small file costs four
control messages (file, begin, piece, fdone); written one file at a time they cost a write (and an SSH packet,
and a round of both event loops and of the SSH relay) each, which is what bounded many small files. The server
engine must answer offers that arrived together together (it once waited a loop round per offer for the
client's UDP hello, long after it came), and the client must offer files in batches as slots free up (offered
one by one as each earlier file ended, they settle into a convoy of one file per packet). Every file's bytes
are checked: size and sha256.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from fasp.datapath import datagram
from tests.engine.helpers import fasp_args, remote, run_ascp, server_mode_pids
from tests.support.files import assert_same_file, random_file, sha256
from tests.support.programs import ENGINE
from tests.support.relayed import relayed_server, reset
from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until

FILES = 400
TRACE = ["strace", "-f", "-qq", "--seccomp-bpf", "-yy", "-s", "0", "-e", "trace=write,sendto,sendmsg,openat2"]
CALL = re.compile(r"^(?:\[pid +\d+\] |\d+ +)?(write|sendto|sendmsg)\((\d+)<([^>]*)>")


def control_writes(trace: str, fd_kind: str) -> int:
    """Writes to descriptors whose strace -yy description starts with ``fd_kind`` (pipe:, TCP:)."""
    return sum(1 for line in trace.splitlines() if (m := CALL.match(line)) and m[3].startswith(fd_kind))


@pytest.mark.slow  # a real fasp-server and two engines under strace
@pytest.mark.timeout(180)
def test_small_files_share_control_writes(tmp_path):
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed")
    server_trace, client_trace = tmp_path / "server.trace", tmp_path / "client.trace"
    wrapper = tmp_path / "engine.sh"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(TRACE)} -o {server_trace} {sys.executable} -m fasp "$@"\n')
    wrapper.chmod(0o755)
    src = tmp_path / "many"
    digests = {i: sha256(random_file(src / f"f{i:04d}.bin", 8192 + i)) for i in range(FILES)}
    with start_fasp_server(tmp_path / "server", engine_command=[str(wrapper)]) as server:
        args = fasp_args(server, "-l", "1000000", "-d", str(src), remote(server, "/"))
        result = subprocess.run(
            [*TRACE, "-o", str(client_trace), *ENGINE, *args], env=server.env(), capture_output=True, timeout=150
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 10)  # its trace is complete
        for i, digest in digests.items():
            assert_same_file(src / f"f{i:04d}.bin", server.docroot / "many" / f"f{i:04d}.bin", digest)
    server_calls = server_trace.read_text(errors="replace")
    # the server engine's control channel is its stdout, a pipe to fasp-server: 3 messages a file
    server_writes = control_writes(server_calls, "pipe:")
    assert server_writes < FILES / 2, f"{server_writes} control writes for {FILES} files"  # one a message: 1,200
    # the client's is its SSH connection: 1 message a file (its offer), plus the setup's few
    client_writes = control_writes(client_trace.read_text(errors="replace"), "TCP:")
    # a small file's looks through the docroot handle (where openat2 is used): its directory and the root
    # (naming.destination), the name (one look for both is-it-a-directory and the overwrite rules), the create,
    # the sidecar's removal; no longer a second look at the name nor the directory reopened for its times
    opens = server_calls.count("openat2(")
    assert opens == 0 or opens < 5.5 * FILES, f"{opens} openat2 calls for {FILES} files"
    assert client_writes < FILES / 5, f"{client_writes} SSH writes for {FILES} files"  # in a convoy: 100 to 200


SMALL, ETHERNET = 8192, 1500 - datagram.IP_UDP_HEADERS


@pytest.mark.timeout(120)
def test_an_8_kib_file_costs_the_link_six_datagrams_of_61_bytes_beyond_its_own(tmp_path):
    """1,000 files of 8 KiB uploaded through the relay in Ethernet-sized datagrams (-Z 1472, -T so the DATA
    heads read in clear): each file's first copy is six DATA datagrams whose link bytes (IPv4 and UDP headers
    included) are the file's plus 6 x 61, 8,558 (with a ts in every DATA header: 8,582). Resends are not judged
    here: on a loaded host the tail timer resends files the receiver was only late for (0 to 37 % more here).
    Every file arrives: size and sha256."""
    files = 1000
    src = tmp_path / "small"
    digests = {i: sha256(random_file(src / f"f{i:04d}.bin", SMALL)) for i in range(files)}
    with relayed_server(tmp_path / "server") as (server, relay):
        reset(relay)
        up: list[bytes] = []
        relay.tamper = lambda data, direction: (direction == "up" and up.append(bytes(data)), [data])[1]
        args = fasp_args(server, "-T", "-l", "50000", "-Z", str(ETHERNET), "-d", str(src), remote(server, "/"))
        result = run_ascp(args, server.env(), timeout=100)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        for i, digest in digests.items():
            assert_same_file(src / f"f{i:04d}.bin", server.docroot / "small" / f"f{i:04d}.bin", digest)
    first: dict[tuple[int, int], int] = {}  # (file id, offset) of each DATA datagram's first copy: its link bytes
    for data in up:
        if datagram.kind(data) != datagram.DATA:
            continue
        file_id, offset, payload = datagram.parse_data(data[datagram.HEADER_SIZE : -datagram.TAG_SIZE])
        if not payload:  # a zero-length probe (the sender asks for a report)
            continue
        first.setdefault((file_id, offset), len(data) + datagram.IP_UDP_HEADERS)
    per_file = 6 * (datagram.HEADER_SIZE + datagram.DATA_HEAD.size + datagram.TAG_SIZE + datagram.IP_UDP_HEADERS)
    assert per_file == 6 * 61
    assert len(first) == 6 * files, len(first)
    assert sum(first.values()) == files * (SMALL + per_file)
