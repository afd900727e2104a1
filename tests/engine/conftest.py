"""Engine test fixtures: a management-port listener and engine processes that are always reaped."""

from __future__ import annotations

import subprocess

import pytest

from tests.engine.helpers import MgmtListener
from tests.support.programs import ENGINE


@pytest.fixture
def listener():
    mgr = MgmtListener()
    try:
        yield mgr
    finally:
        mgr.close()


@pytest.fixture
def spawn():
    """Start engine processes; every one is killed and reaped at the end of the test."""
    procs: list[subprocess.Popen] = []

    def start(args: list[str], env: dict) -> subprocess.Popen:
        proc = subprocess.Popen([*ENGINE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
