"""Free loopback ports for tests.

A port found this way can be taken by someone else before it is bound again, so
servers that can print the port they picked (fasp-server with port 0) should be
started that way instead; this is for programs that cannot (sshd, iperf3).
"""

from __future__ import annotations

import socket


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port on ``host`` that is free right now for ``kind`` (SOCK_STREAM or SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
