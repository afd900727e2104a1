"""bench.peers.SessionPeak: a server's memory figure is its session processes' peak, not the server's own.

RUSAGE_CHILDREN's maxrss of a stopped fasp-server is the largest of the server itself (its password's scrypt
takes 128 MiB) and what it reaped, so the engines' memory never showed. Here a small parent starts a child
that holds 160 MiB for a moment: the watcher reports the child's peak."""

from __future__ import annotations

import subprocess
import sys

from bench.peers import SessionPeak, vm_hwm_mib


def test_peak_is_the_largest_descendant():
    hold = "import time; block = b'x' * (160 << 20); time.sleep(1.0)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {hold!r}])"]
    )
    peak = SessionPeak(parent.pid, every=0.05)
    try:
        assert parent.wait(timeout=30) == 0
    finally:
        mib = peak.stop()
    assert 160 <= mib < 400, mib


def test_a_gone_process_reads_zero():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: /proc has no entry for it
    assert vm_hwm_mib(gone.pid) == 0.0
