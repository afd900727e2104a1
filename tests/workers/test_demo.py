"""``faspq demo`` from nothing: embedded Redis, fasp-server, worker, a verified transfer, all cleaned up."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.support.procs import processes
from workers.local import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_faspq_demo_passes_and_cleans_up():
    before = set(glob.glob(f"{tempfile.gettempdir()}/faspq-demo-*"))
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("FASPQ_")}
    proc = subprocess.run([sys.executable, "-m", "tasks.cli", "demo", "--size-mb", "8", "--files", "2"],
                          cwd=REPO_ROOT, env=env_free, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "demo passed" in proc.stdout
    assert proc.stdout.count("yes") >= 2  # both files verified
    assert set(glob.glob(f"{tempfile.gettempdir()}/faspq-demo-*")) == before
    assert not [cmd for cmd in _command_lines() if "faspq-demo-" in cmd]  # no process left behind


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_faspq_demo_killed_by_signal_cleans_up(sig):
    before = set(glob.glob(f"{tempfile.gettempdir()}/faspq-demo-*"))
    env_free = {k: v for k, v in os.environ.items() if not k.startswith("FASPQ_")}
    proc = subprocess.Popen([sys.executable, "-m", "tasks.cli", "demo", "--size-mb", "64", "--files", "2",
                             "--rate", "20000"], cwd=REPO_ROOT, env=env_free, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # mid-transfer: Redis, server, worker and engines all up
        seen.append(line)
        if line.startswith("transfer"):
            break
    else:
        raise AssertionError("".join(seen))
    time.sleep(2)
    assert [cmd for cmd in _command_lines() if "faspq-demo-" in cmd]
    proc.send_signal(sig)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0 and "demo interrupted" in rest, rest
    assert set(glob.glob(f"{tempfile.gettempdir()}/faspq-demo-*")) == before
    assert not [cmd for cmd in _command_lines() if "faspq-demo-" in cmd]


def _command_lines() -> list[str]:
    return [b" ".join(p.argv).decode(errors="replace") for p in processes()]
