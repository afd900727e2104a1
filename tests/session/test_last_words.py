"""What a client says when the server's engine goes away: the reason that engine gave on stderr, not whatever
line it wrote last (an info line, the usage hint after an error)."""

from __future__ import annotations

import os
import stat

import pytest

from tests.engine.helpers import fasp_args, remote, run_ascp
from tests.support.files import random_file
from tests.support.servers import start_fasp_server

INFO = "fasp-server-mode: session 7: client uploads, destination '/', UDP port 55300"


def _engine(path, *lines: str) -> list[str]:
    """A server-side engine that writes ``lines`` to stderr and exits 1 without a word on the channel."""
    path.write_text("#!/bin/sh\n" + "".join(f"echo {line!r} >&2\n" for line in lines) + "exit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return [str(path)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("lines", "said"),
    [
        ((INFO, "fasp-ascp: error 8: -l: '0' is below 1", "(fasp-ascp --help lists every option)"), "error 8: -l"),
        ((INFO, "fasp-server-mode: session failed: the disk is full", INFO), "session failed: the disk is full"),
        ((INFO,), "no reason given"),
    ],
)
def test_the_client_names_the_reason_the_server_engine_gave(tmp_path, lines, said):
    with start_fasp_server(tmp_path / "srv", engine_command=_engine(tmp_path / "engine.sh", *lines)) as server:
        src = random_file(tmp_path / "a.bin", 1000)
        result = run_ascp(fasp_args(server, str(src), remote(server, "/a.bin")), server.env())
    err = result.stderr.decode(errors="replace")
    assert result.returncode != 0 and said in err, err
    assert "UDP port 55300" not in err and "--help" not in err, err
    assert not os.path.exists(server.docroot / "a.bin")
