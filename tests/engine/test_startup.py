"""A plain upload's start loads only what it uses: every engine run pays for its imports (a one-file transfer
is about a quarter of a second in all), so the HTTP fallback, the management port, the -e hooks, streams, the
receiving role, aspera.conf and the library's sessions load only when a command line asks for them."""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]

UNUSED = (
    "fasp.datapath.httpchannel",
    "fasp.datapath.httpframes",
    "fasp.options.asperaconf",
    "fasp.session.mgmtport",
    "fasp.session.prepost",
    "fasp.session.receiving",
    "fasp.session.stream",
    "faspmanager.options",
    "faspmanager.orders",
    "faspmanager.progress",
    "faspmanager.session",
    "importlib.metadata",
    "xml.parsers.expat",
)

_UPLOAD = """
import sys
from fasp.cli.ascp import main
print(main(["-q", "-P", sys.argv[1], "--mode=send", "--user=x", "--host=127.0.0.1", sys.argv[2], "/"]))
print(" ".join(sys.modules))
"""


def test_a_plain_upload_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    """Up to its SSH connection (refused here: nothing listens on the port), in a fresh interpreter without
    site's .pth files (-S), which could import any of these themselves."""
    src = tmp_path / "a.bin"
    src.write_bytes(b"x")
    env = {"PYTHONPATH": ":".join([str(ROOT), *site.getsitepackages()]), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-S", "-c", _UPLOAD, str(free_port()), str(src)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    code, modules = out.stdout.splitlines()
    assert code == "12", out.stderr  # it got as far as the connection
    assert sorted(set(UNUSED) & set(modules.split())) == []
