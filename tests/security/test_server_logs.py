"""Issue 10, attack 3: the server's -R log written where a client said, and lines injected into it.

The attacker uploaded (stock fasp-ascp, --symbolic-links=copy) a link named like the server's log
file pointing at a file outside the docroot, then ran a session with ``-R`` naming that directory:
the server appended its log through the link. A control message field holding a newline then put
a line of the attacker's choosing in it (pointed at an authorized_keys: a login).

Now a client's -R only makes fasp-server's engine log into the operator's --log-dir, under a name
the server picks, and every record is one line with control characters escaped.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from fasp.options.peer import PeerOptions
from fasp.session import control
from fasp.session.messages import FallbackReady, Rate
from tests.engine.helpers import fasp_args, remote, run_ascp
from tests.support.control_client import hello
from tests.support.files import assert_same_file, random_file
from tests.support.servers import FaspServer, start_fasp_server

pytestmark = pytest.mark.timeout(120)

INJECTED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIInjectedByTheClient attacker@evil"
FORGED = "1999-01-01 00:00:00,000 "  # looks like a record's start
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")  # every record starts with its asctime


@pytest.fixture
def server(tmp_path) -> FaspServer:
    with start_fasp_server(tmp_path / "srv", extra_args=["--log-dir", str(tmp_path / "srv-logs")]) as srv:
        yield srv


def _server_logs(server: FaspServer, log_dir: Path) -> list[Path]:
    """Every log file the server's engines wrote, wherever (the docroot, or the operator's log dir)."""
    found = [p for p in server.docroot.rglob("fasp-ascp-server*") if p.is_file() and not p.is_symlink()]
    return found + [p for p in log_dir.rglob("*.log") if p.is_file()]


def test_link_named_like_the_log_file_gets_no_log_through_it(server, tmp_path):
    outside = tmp_path / "outside" / "authorized_keys"
    outside.parent.mkdir()
    outside.write_text("ssh-ed25519 AAAA-the-real-key root@host\n")
    before = outside.read_bytes()
    # the attacker's upload: a link named like the server's -R log file, pointing outside the docroot
    staged = tmp_path / "staged" / "logs"
    staged.mkdir(parents=True)
    (staged / "fasp-ascp-server.log").symlink_to(outside)
    up = run_ascp(fasp_args(server, "--symbolic-links=copy", str(staged), remote(server, "/")), server.env())
    planted = server.docroot / "logs" / "fasp-ascp-server.log"
    if not planted.is_symlink():  # the docroot refused the link (another fix): plant it, -R must hold alone
        planted.parent.mkdir(exist_ok=True)
        planted.symlink_to(outside)
    # then a session asking for the server's log in that directory
    src = random_file(tmp_path / "payload.bin", 4096)
    done = run_ascp(fasp_args(server, "-R", "/logs", str(src), remote(server, "/payload.bin")), server.env())
    assert done.returncode == 0, (up.stderr + done.stderr).decode(errors="replace")
    assert_same_file(src, server.docroot / "payload.bin")
    assert outside.read_bytes() == before, "the server wrote its log through the client's link"
    logs = list((tmp_path / "srv-logs").rglob("*.log"))
    assert len(logs) == 1 and logs[0].parent == tmp_path / "srv-logs" / server.user, logs
    assert "ended by the client" in logs[0].read_text()


def test_no_client_string_starts_a_log_line(server, tmp_path):
    # a file name with a newline, uploaded by a stock client with -R
    odd = random_file(tmp_path / "src" / f"odd\n{INJECTED}", 100)
    done = run_ascp(fasp_args(server, "-R", "/r", str(odd), remote(server, "/")), server.env())
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert_same_file(odd, server.docroot / odd.name)
    # a control message field with a newline, from a hand-built client: the server logs why it refuses it
    stderr = asyncio.run(_session_with_a_bad_field(server, f"7\n{FORGED}{INJECTED}"))
    assert "unexpected fallback_ok message" in stderr
    logs = _server_logs(server, tmp_path / "srv-logs")
    assert logs
    for path in logs:
        for line in path.read_text().splitlines():
            assert LOG_LINE.match(line), f"{path.name}: a line that is no record of the server's: {line!r}"
            assert not line.startswith(FORGED), f"{path.name}: the client's forged record: {line!r}"
    assert any("unexpected fallback_ok message" in p.read_text() for p in logs)


async def _session_with_a_bad_field(server: FaspServer, field: str) -> str:
    """A valid hello asking for -R, then a message the server does not expect whose token holds ``field``."""
    async with server.ssh() as conn:
        proc = await conn.create_process("fasp-ascp --server", encoding=None)
        proc.stdin.write(control.frame(hello(PeerOptions(log_dir="/r"), rate=Rate(1000, 0, "fair"))))
        length = int.from_bytes(await proc.stdout.readexactly(4), "big")
        assert b'"welcome"' in await proc.stdout.readexactly(length)
        proc.stdin.write(control.frame(FallbackReady(token=field)))
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    return stderr.decode(errors="replace")
