"""Shared helpers for data-path tests: two real Transports on loopback, real files."""

from __future__ import annotations

import asyncio
import functools
import os
from contextlib import asynccontextmanager

from fasp.datapath.seal import SessionKey
from fasp.datapath.udpchannel import Transport


def session_key(size: int = 16, material: bytes = b"k") -> SessionKey:
    """A key as both ends of a session would derive it (fixed material, so two ends built apart agree);
    ``size`` is the cipher's key bytes, 0 for -T."""
    return SessionKey(material * 32, size)


CLEAR = session_key(0)  # -T: integrity only


def aio(fn):
    """Run an async test function in a fresh event loop (no asyncio pytest plugin is installed)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        asyncio.run(fn(*args, **kwargs))

    return run


DEFAULT_KEY = session_key(16)  # one key for the pairs that do not choose theirs


@asynccontextmanager
async def pair(*, key: SessionKey = DEFAULT_KEY, via=None, **kw):
    """A listener and a connected client sharing a fresh session id; ``via(port)`` may interpose a relay port.
    Datagrams are 1,400 bytes unless ``datagram_size`` says (0: discovered), so counts of them mean the same on
    loopback as on a path."""
    kw.setdefault("datagram_size", 1400)
    sid = os.urandom(16)
    server = await Transport.listen("127.0.0.1", 0, session_id=sid, key=key, **kw)
    client = None
    try:
        port = server.local_port if via is None else await via(server.local_port)
        client = await Transport.connect("127.0.0.1", port, session_id=sid, key=key, timeout=5, **kw)
        yield client, server
    finally:
        if client is not None:
            await client.close()
        await server.close()


async def transfer(
    sender: Transport,
    receiver: Transport,
    file_id: int,
    src_path,
    dst_path,
    start: int = 0,
    end: int | None = None,
    timeout: float = 60,
) -> None:
    """Send [start, end) of src_path into dst_path (created/extended) through the two ends."""
    size = os.path.getsize(src_path)
    end = size if end is None else end
    src = os.open(src_path, os.O_RDONLY)
    dst = os.open(dst_path, os.O_RDWR | os.O_CREAT)
    try:
        rx = asyncio.ensure_future(receiver.receive(file_id, dst, start, end))
        await asyncio.sleep(0)
        await asyncio.wait_for(sender.send(file_id, src, start, end), timeout)
        await asyncio.wait_for(rx, 5)
    finally:
        os.close(src)
        os.close(dst)
