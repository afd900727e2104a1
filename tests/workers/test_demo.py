"""``faspq demo`` from nothing: embedded Redis, fasp-server, worker, a verified transfer, all cleaned up."""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.procs import processes

pytestmark = pytest.mark.slow


def _demo_env(tmp_path: Path) -> tuple[dict[str, str], str]:
    """No FASPQ_* settings, and a TMPDIR of the test's own (a demo another run starts meanwhile is not this one);
    returns the environment and the prefix of this demo's paths."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASPQ_")}
    env["TMPDIR"] = str(tmpdir)
    return env, f"{tmpdir}/faspq-demo-"


@pytest.mark.timeout(180)
def test_faspq_demo_passes_and_cleans_up(tmp_path):
    """Run from a directory of its own: the demo finds its programs as an installed package, not by a path."""
    env, demo_paths = _demo_env(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.cli", "demo", "--size-mb", "8", "--files", "2", "--rate", "20000"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "demo passed" in proc.stdout
    assert proc.stdout.count("yes") >= 2  # both files verified
    totals = {int(total) for total in re.findall(r"^total: \d+/(\d+) bytes", proc.stdout, re.MULTILINE)}
    assert totals == {8 << 20}, proc.stdout  # the job's total from the first line on, not the files started so far
    assert not glob.glob(f"{demo_paths}*")
    assert not [cmd for cmd in _command_lines() if demo_paths in cmd]  # no process left behind


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_faspq_demo_killed_by_signal_cleans_up(sig, tmp_path):
    env, demo_paths = _demo_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasks.cli", "demo", "--size-mb", "64", "--files", "2", "--rate", "20000"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in proc.stdout:  # mid-transfer: Redis, server, worker and engines all up
        seen.append(line)
        if line.startswith("transfer"):
            break
    else:
        raise AssertionError("".join(seen))
    time.sleep(2)
    assert [cmd for cmd in _command_lines() if demo_paths in cmd]
    proc.send_signal(sig)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0 and "demo interrupted" in rest, rest
    assert not glob.glob(f"{demo_paths}*")
    assert not [cmd for cmd in _command_lines() if demo_paths in cmd]


def _command_lines() -> list[str]:
    return [b" ".join(p.argv).decode(errors="replace") for p in processes()]
