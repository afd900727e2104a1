"""The client's session handshake: hello/welcome on the control channel, then the data channel.

Each end's key share travels only in hello and welcome; the session key is derived from both and the
session id. The data channel is UDP, or with -y 1 HTTP(S) when the UDP handshake gets no answer. What
comes out is a :class:`Link`, complete: nothing of a session exists before its handshake succeeded. An
upload without -y 1 has nothing to choose, so its UDP handshake goes on after the Link is made (its
``opening``) while the first offer travels: the piece request and the listener's answer come back together,
and no file byte leaves before that answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from fasp.datapath.datachannel import DataChannel
from fasp.datapath.rate import RateSettings
from fasp.datapath.seal import SHARE_BYTES, SessionKey
from fasp.datapath.udpchannel import Transport
from fasp.errors import ProtocolError
from fasp.options.flags import Config, Endpoint
from fasp.session.messages import VERSION, Fallback, FallbackReady, Hello, Message, Rate, SessionFailed, Welcome
from fasp.session.peer import PeerEngine
from fasp.session.setupclock import SetupClock
from faspmanager.codes import EngineError, ErrorCode

if TYPE_CHECKING:
    from fasp.datapath.httpchannel import FallbackTransport

log = logging.getLogger("fasp.session.handshake")
WELCOME_TIMEOUT = 20.0
UDP_TRY_WITH_FALLBACK = 3.0  # with -y 1, how long the UDP handshake may take before HTTP takes over


@dataclass(frozen=True)
class Link:
    """An open session's data path as the handshake left it."""

    transport: DataChannel
    carrier: str  # what SESSION reports: udp, http or https
    port: int  # the peer's data port (UDP, or the HTTP fallback's)
    rate: RateSettings  # ours, as the peer capped it
    opening: asyncio.Future[None] | None = None
    """An upload's UDP handshake, still under way: done once the listener answered, or its EngineError. The
    session's first offer goes out meanwhile; the transport's sends wait for it."""


async def handshake(
    cfg: Config, remote: Endpoint, peer: PeerEngine, session_id: str, rate: RateSettings, clock: SetupClock
) -> Link:
    """Say hello with our rate and options, check the welcome, open the data channel."""
    share = os.urandom(SHARE_BYTES)
    await peer.channel.send(
        Hello(
            v=VERSION,
            session=session_id,
            share=share,
            key_bytes=cfg.key_bytes,
            direction=cfg.direction,
            dest=cfg.dest,
            datagram_size=cfg.datagram_size,
            udp_port=cfg.udp_port,
            rate=Rate.of(rate),
            opts=cfg.options_for_peer(),
            token=cfg.token,
        )
    )
    welcome = await _answer(peer, Welcome, "the session", ErrorCode.TRANSFER_TIMEOUT, ErrorCode.TRANSFER_ERROR)
    clock.mark("welcome")
    rate = welcome.rate.settings()
    key = SessionKey.derive(share, welcome.share, bytes.fromhex(session_id), cfg.key_bytes)
    if cfg.direction == "send" and not cfg.http_fallback:  # without a fallback to choose, nothing waits on UDP
        dialing = await Transport.dial(
            remote.host,
            welcome.udp_port,
            session_id=bytes.fromhex(session_id),
            key=key,
            datagram_size=cfg.datagram_size,
            rate=rate,
        )
        opening = asyncio.ensure_future(_established(dialing, peer, clock))
        return Link(dialing, "udp", welcome.udp_port, rate, opening)
    try:
        transport: DataChannel = await _open_udp(cfg, remote, peer, welcome.udp_port, session_id, key, rate)
    except EngineError as exc:
        if not cfg.http_fallback or exc.code not in (ErrorCode.CONNECTION_TIMEOUT, ErrorCode.CONNECTION_ERROR):
            raise
        log.info("UDP data channel failed (%s): trying the HTTP fallback", exc.description)
        fallback = await _open_fallback(cfg, remote, peer, session_id, key, rate)
        clock.mark("udp")  # the data channel, here HTTP
        return Link(fallback, fallback.name, cfg.http_port, rate)
    clock.mark("udp")
    return Link(transport, "udp", welcome.udp_port, rate)


async def _established(transport: Transport, peer: PeerEngine, clock: SetupClock) -> None:
    """A dialing transport's handshake: done, or the EngineError that ends the session (with the peer's last
    words)."""
    try:
        await transport.established()
    except EngineError as exc:
        raise _with_last_words(exc, peer) from None
    clock.mark("udp")


def _with_last_words(exc: EngineError, peer: PeerEngine) -> EngineError:
    """A data channel's failure with what the peer engine said on its way out (why it failed, often)."""
    detail = peer.last_words()
    return EngineError(exc.code, f"{exc.description}{'; peer: ' + detail if detail else ''}")


Answer = TypeVar("Answer", bound=Message)


async def _answer(
    peer: PeerEngine, expected: type[Answer], request: str, silent: ErrorCode, closed: ErrorCode
) -> Answer:
    """The peer engine's answer to ``request``: a message of type ``expected``, or the EngineError its
    error message names, or ``silent``/``closed`` (with its last words) when it says nothing or goes away."""
    try:
        answer = await asyncio.wait_for(peer.channel.recv(), WELCOME_TIMEOUT)
    except TimeoutError:
        raise EngineError(silent, f"the remote engine did not answer {request}") from None
    if answer is None:
        await asyncio.sleep(0.2)  # let its last words arrive on stderr
        raise EngineError(
            closed,
            f"the remote engine closed the session instead of answering {request}: "
            f"{peer.last_words() or 'no reason given'}",
        )
    if isinstance(answer, SessionFailed):
        raise EngineError(answer.code, answer.desc)
    if not isinstance(answer, expected):
        raise ProtocolError(f"unexpected answer to {request} from the remote engine: {answer.TYPE}")
    return answer


async def _open_fallback(
    cfg: Config, remote: Endpoint, peer: PeerEngine, session_id: str, key: SessionKey, rate: RateSettings
) -> FallbackTransport:
    """Ask the peer engine to expect us on its fallback port, then dial it (code 47 if that fails). The HTTP
    channel is imported here: a session over UDP never loads it."""
    from fasp.datapath.httpchannel import FallbackTransport, dial

    await peer.channel.send(Fallback(jpeg=cfg.jpeg))
    answer = await _answer(
        peer,
        FallbackReady,
        "the HTTP fallback request",
        ErrorCode.CONNECTION_ERROR_HTTP,
        ErrorCode.CONNECTION_ERROR_HTTP,
    )
    reader, writer, buffered, carrier = await dial(
        remote.host,
        cfg.http_port,
        session_id=session_id,
        token=answer.token,
        jpeg=cfg.jpeg,
        cafile=cfg.https_cert,
        keyfile=cfg.https_key,
        proxy=cfg.proxy,
    )
    return FallbackTransport(
        reader,
        writer,
        session_id=bytes.fromhex(session_id),
        key=key,
        direction=0,
        jpeg=cfg.jpeg,
        rate=rate,
        name=carrier,
        buffered=buffered,
    )


async def _open_udp(
    cfg: Config, remote: Endpoint, peer: PeerEngine, udp_port: int, session_id: str, key: SessionKey, rate: RateSettings
) -> Transport:
    """Handshake on UDP while watching the control channel: the peer is silent there until we
    speak, so anything it says meanwhile (an error, or closing) explains a handshake that fails."""
    attempt = {"timeout": UDP_TRY_WITH_FALLBACK} if cfg.http_fallback else {}
    connect = asyncio.ensure_future(
        Transport.connect(
            remote.host,
            udp_port,
            session_id=bytes.fromhex(session_id),
            key=key,
            datagram_size=cfg.datagram_size,
            rate=rate,
            **attempt,
        )
    )
    said = asyncio.ensure_future(peer.channel.recv())
    await asyncio.wait({connect, said}, return_when=asyncio.FIRST_COMPLETED)
    if connect.done():
        said.cancel()
        try:
            return connect.result()
        except EngineError as exc:
            raise _with_last_words(exc, peer) from None
    connect.cancel()
    msg = said.result()
    if isinstance(msg, SessionFailed):
        raise EngineError(msg.code, msg.desc)
    await asyncio.sleep(0.2)  # let its last words arrive on stderr
    what = msg.TYPE if msg is not None else "closed"
    raise EngineError(
        ErrorCode.TRANSFER_ERROR,
        f"the remote engine ended the session before the data channel opened: {peer.last_words() or what}",
    )
