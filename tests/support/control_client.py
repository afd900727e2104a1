"""A hand-built client: just enough of the control protocol over SSH to offer files, as an attacker writes it.

Its data channel is only dialled, never used: the server engine acts on an offer once the client's UDP hello
reached it, and is then driven through its control messages alone (fasp/session/control.py framing).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid

from fasp.datapath.seal import SessionKey
from fasp.datapath.udpchannel import Transport
from fasp.options.peer import PeerOptions
from fasp.session.channel import Channel
from fasp.session.messages import VERSION, Cancel, Hello, Message, Offer, Rate, RateChange, Welcome

SLOW_FAIR = Rate(10_000, 0, "fair")


def hello(opts: PeerOptions, dest: str = "/", direction: str = "send", rate: Rate = SLOW_FAIR) -> Hello:
    """A client's first message, as our engine builds it (a fresh session id and key share)."""
    return Hello(
        v=VERSION,
        session=uuid.uuid4().hex,
        share=secrets.token_bytes(32),
        key_bytes=16,
        direction=direction,
        dest=dest,
        datagram_size=1400,
        udp_port=0,
        rate=rate,
        opts=opts,
    )


class ControlClient:
    """Offers files to a server engine over SSH and reads its answers."""

    def __init__(self, server, dest: str, opts: PeerOptions, rate: Rate = SLOW_FAIR) -> None:
        self.server, self.dest, self.opts, self.rate = server, dest, opts, rate

    async def __aenter__(self) -> ControlClient:
        server = self.server
        self.conn = await server.ssh()
        self.proc = await self.conn.create_process("fasp-ascp --server", encoding=None)
        self.channel = Channel(self.proc.stdout, self.proc.stdin)
        first = hello(self.opts, self.dest, rate=self.rate)
        session, share = first.session, first.share
        await self.channel.send(first)
        welcome = await asyncio.wait_for(self.channel.recv(), 30)
        assert isinstance(welcome, Welcome), welcome
        self.udp = await Transport.dial(
            server.host,
            welcome.udp_port,
            session_id=bytes.fromhex(session),
            key=SessionKey.derive(share, welcome.share, bytes.fromhex(session), 16),
            datagram_size=1400,
        )
        return self

    async def offer(self, rel: str, size: int, mtime: float) -> Message:
        """Offer one file; the server's first answer about it."""
        await self.channel.send(Offer(fid=1, arg=0, rel=rel, lone=False, size=size, mtime=mtime, mode=0o100644))
        return await self.answer()

    async def answer(self) -> Message:
        while True:
            msg = await asyncio.wait_for(self.channel.recv(), 30)
            assert msg is not None, "the server closed the session"
            if not isinstance(msg, RateChange):
                return msg

    async def __aexit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            await self.channel.send(Cancel())
        self.channel.close()
        await self.udp.close()
        self.conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.wait_closed(), 10)
