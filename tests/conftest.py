"""Shared fixtures: real servers (fasp-server, OpenSSH sshd) on free loopback ports, for every test directory.

Host keys are checked (fasp/session/hostkeys.py): the engine trusts only the keys listed in ``$FASP_KNOWN_HOSTS``. It is
set here, at import, to one file for the whole test session, so every process a test starts inherits it; every
server tests/support/servers.py starts appends its ``[host]:port`` line there (``register_host_key``).
"""
import atexit
import os
import shutil
import tempfile

_KNOWN_HOSTS_DIR = tempfile.mkdtemp(prefix="fasp-known-hosts-")
atexit.register(shutil.rmtree, _KNOWN_HOSTS_DIR, ignore_errors=True)
os.environ["FASP_KNOWN_HOSTS"] = os.path.join(_KNOWN_HOSTS_DIR, "known_hosts")

pytest_plugins = ["tests.support.servers"]
