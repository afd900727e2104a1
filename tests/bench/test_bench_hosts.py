"""FASP_BENCH_HOSTS names every namespace a bench makes, the loopback one included."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.peers import REPO


def _names(hosts: str) -> list[str]:
    env = {**os.environ, "FASP_BENCH_HOSTS": hosts}
    code = "import bench.run as r; print(r.HOSTS.a, r.HOSTS.b, r.LOOPBACK_NS)"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_two_benches_with_their_own_hosts_share_no_namespace():
    """Two benches side by side (each its FASP_BENCH_HOSTS) never share a namespace: creating one deletes a
    namespace of the same name, and every process the other bench runs in it."""
    one, two = _names("r7x,10.91.0"), _names("r7y,10.92.0")
    assert one == ["r7x-a", "r7x-b", "r7x-lo"]
    assert not set(one) & set(two)
