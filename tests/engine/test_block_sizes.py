"""-g (read size) and -G (write size) seen in the system calls of the real engines, both directions.

Both engines run under strace (the server's through fasp-server's --engine-command), which records every
pread64/pwrite64 with the path of its file descriptor: the side that reads the source must read it in
blocks of exactly -g bytes, the side that writes the destination in blocks of at most -G bytes, most of them
whole. The engine's own choice (no flags) never produces either block size, so an ignored flag fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.helpers import fasp_args, remote, server_mode_pids
from tests.support.files import assert_same_file, random_file, sha256
from tests.support.programs import ENGINE
from tests.support.servers import start_fasp_server
from tests.support.wait import wait_until

SIZE = 16 << 20
TRACE = ["strace", "-ff", "-qq", "--seccomp-bpf", "-y", "-s", "0", "-e", "trace=pread64,pwrite64"]
CALL = re.compile(r"^(pread64|pwrite64)\(\d+<(.*)>, .*, (\d+), (\d+)\)\s+= (-?\d+)")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A fasp-server whose engines run under strace, writing to the prefix named in a file (one per run)."""
    if shutil.which("strace") is None:
        pytest.fail("strace is not installed")
    work = tmp_path_factory.mktemp("traced")
    prefix_file = work / "prefix"
    wrapper = work / "engine.sh"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(TRACE)} -o "$(cat {prefix_file})" {sys.executable} -m fasp "$@"\n')
    wrapper.chmod(0o755)
    with start_fasp_server(work / "server", engine_command=[str(wrapper)]) as server:
        server.prefix_file = prefix_file
        yield server


def calls(prefix: Path, kind: str, path_part: str) -> list[int]:
    """Byte counts asked for by the ``kind`` calls on files whose path contains ``path_part``."""
    sizes = []
    for trace in prefix.parent.glob(prefix.name + ".*"):
        for line in trace.read_text(errors="replace").splitlines():
            m = CALL.match(line)
            if m and m[1] == kind and path_part in m[2]:
                assert int(m[5]) == int(m[3]), line  # every call moved all it asked for
                sizes.append(int(m[3]))
    return sizes


def check_blocks(reads: list[int], writes: list[int], read_size: int, write_size: int) -> None:
    assert sum(reads) >= SIZE and reads, "the source was not read with pread"
    assert max(reads) == read_size  # never more than -g ...
    assert sum(r for r in reads if r == read_size) >= SIZE - read_size  # ... and all whole blocks but the last
    assert sum(writes) >= SIZE and max(writes) <= write_size
    assert sum(w for w in writes if w == write_size) >= SIZE // 2, sorted(set(writes))  # mostly whole blocks


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_read_and_write_block_sizes(traced, tmp_path, direction):
    server = traced
    src = (
        random_file(tmp_path / "src" / f"bs-{direction}.bin", SIZE)
        if direction == "upload"
        else random_file(server.docroot / f"bs-{direction}.bin", SIZE)
    )
    digest = sha256(src)
    for run, (read_size, write_size) in enumerate([(65536, 1 << 20), (1 << 20, 65536)]):
        local, remote_prefix = tmp_path / f"client{run}", tmp_path / f"server{run}"
        server.prefix_file.write_text(str(remote_prefix))
        sizes = ["-g", str(read_size), "-G", str(write_size)]
        if direction == "upload":
            args = fasp_args(server, *sizes, str(src), remote(server, f"/up{run}.bin"))
            dest = server.docroot / f"up{run}.bin"
        else:
            (tmp_path / f"down{run}").mkdir()
            args = fasp_args(server, *sizes, remote(server, "/" + src.name), str(tmp_path / f"down{run}"))
            dest = tmp_path / f"down{run}" / src.name
        result = subprocess.run(
            [*TRACE, "-o", str(local), *ENGINE, *args], env=server.env(), capture_output=True, timeout=60
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 10)  # its trace is complete
        assert_same_file(src, dest, digest)
        reader, writer = (local, remote_prefix) if direction == "upload" else (remote_prefix, local)
        check_blocks(calls(reader, "pread64", str(src)), calls(writer, "pwrite64", str(dest)), read_size, write_size)
