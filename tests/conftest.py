"""Shared fixtures: real servers (fasp-server, OpenSSH sshd) on free loopback ports, for every test directory.

Host keys are checked (fasp/session/hostkeys.py): the engine trusts only the keys listed in ``$FASP_KNOWN_HOSTS``. It is
set here, at import, to one file for the whole test session, so every process a test starts inherits it; every
server tests/support/servers.py starts appends its ``[host]:port`` line there (``register_host_key``).

``pytest -m "not slow"`` is the fast unit subset: a test is ``slow`` when it uses a fixture that starts real
servers, engines, workers or namespaces (SLOW_FIXTURES, marked here) or carries the mark itself (it starts such
things another way, or runs over about a second). Helpers the tests share live in tests/support/.
"""

import atexit
import os
import shutil
import tempfile

import pytest

_KNOWN_HOSTS_DIR = tempfile.mkdtemp(prefix="fasp-known-hosts-")
atexit.register(shutil.rmtree, _KNOWN_HOSTS_DIR, ignore_errors=True)
os.environ["FASP_KNOWN_HOSTS"] = os.path.join(_KNOWN_HOSTS_DIR, "known_hosts")

pytest_plugins = ["tests.support.servers"]

SLOW_FIXTURES = frozenset(
    {
        "fasp_server",
        "fasp_server_module",
        "openssh_server",
        "echo_server",
        "two_users",
        "logging_server",
        "relayed",
        "traced",
        "server",
        "redis_server",
        "faspq",
        "worker_factory",
        "worker",
        "workers",
        "flower",
        "deployment",
        "spawn",
        "lab",
        "hosts",
    }
)
"""Fixtures that start real servers, engines, workers or network namespaces: a test using one is ``slow``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` what uses a SLOW_FIXTURES fixture; ``pytest -m "not slow"`` is then the fast unit subset."""
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
