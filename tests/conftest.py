"""Shared fixtures: real servers (fasp-server, OpenSSH sshd) on free loopback ports, for every test directory."""
pytest_plugins = ["tests.support.servers"]
