"""Issue 10, item 9: fasp-server offered diffie-hellman-group14-sha1, 1024-bit group exchange,
hmac-sha1, umac-64 and zlib. ssh-audit (the dev extra) audits a real fasp-server: nothing it rates
a failure, no compression, and our fasp-ascp still gets in (bytes checked).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.engine.helpers import fasp_args, remote, run_ascp
from tests.support.files import assert_same_file, random_file
from tests.support.servers import start_fasp_server

pytest.importorskip("ssh_audit")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SHA1_OR_WEAK = ("sha1", "group1-", "group-exchange", "umac-64", "nistp", "ssh-rsa", "zlib", "cbc", "md5")


def test_ssh_audit_finds_no_failure(tmp_path):
    with start_fasp_server(tmp_path / "srv") as server:
        done = subprocess.run(
            [sys.executable, "-m", "ssh_audit", "-j", "-p", str(server.port), server.host],
            capture_output=True,
            text=True,
            timeout=120,
        )
        report = json.loads(done.stdout)
        failures = {
            (kind, entry["algorithm"]): entry["notes"]["fail"]
            for kind in ("kex", "key", "enc", "mac")
            for entry in report[kind]
            if entry.get("notes", {}).get("fail")
        }
        assert failures == {}
        assert report["compression"] == ["none"]
        offered = [entry["algorithm"] for kind in ("kex", "key", "enc", "mac") for entry in report[kind]]
        assert not [alg for alg in offered if any(weak in alg for weak in SHA1_OR_WEAK)], offered
        assert done.returncode != 3, done.stdout  # ssh-audit's exit code for "failures found"
        # clients still agree with it: our engine, bytes checked
        src = random_file(tmp_path / "audited.bin", 1 << 16)
        sent = run_ascp(fasp_args(server, str(src), remote(server, "/audited.bin")), server.env())
        assert sent.returncode == 0, sent.stderr.decode(errors="replace")
        assert_same_file(src, server.docroot / "audited.bin")
