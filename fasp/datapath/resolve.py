"""Name resolution without a thread for the usual case: a peer given by its address.

``loop.getaddrinfo`` always runs in the default executor, which in a fresh engine means starting a thread
(and a lock round trip) for every lookup; an address literal needs no lookup, so it is answered inline.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any


async def addresses(host: str, port: int, kind: socket.SocketKind) -> list[tuple[Any, ...]]:
    """``getaddrinfo(host, port, type=kind)``: inline for an address literal, in the executor for a name."""
    try:
        return socket.getaddrinfo(host, port, type=kind, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return await asyncio.get_running_loop().getaddrinfo(host, port, type=kind)
