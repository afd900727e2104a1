"""Issue 10, items 6 and 7: the session key comes from both ends' shares, and -T authenticates with it.

The attack: an on-path observer of a ``-T`` upload (here, the impairment relay between the engines, which
sees and may inject every datagram) reads the session id in the clear header of a captured datagram, keys a
GMAC tag from it as the engine used to (HKDF of the session id), and injects, ahead of each real DATA
datagram, a forged one with the same header and other bytes. The upload must still land byte for byte: the
engine keys -T tags from the secret both ends derived over SSH, never from header fields.
"""

from __future__ import annotations

import asyncio
import os
import struct

import asyncssh
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fasp.datapath import datagram
from fasp.datapath.seal import SHARE_BYTES, Rejected, Seal, SessionKey
from fasp.datapath.udpchannel import Transport
from fasp.options.peer import PeerOptions
from fasp.session import control
from fasp.session.messages import VERSION, Hello, Rate, Welcome
from faspmanager.codes import EngineError, ErrorCode
from tests.engine.helpers import fasp_args, remote, run_ascp
from tests.support.files import assert_same_file, random_file, sha256
from tests.support.relayed import relayed_server, reset

EVIL = b"forged by the man in the middle "


def _forge(packet: bytes) -> bytes | None:
    """A DATA datagram with the same header (connection id, direction, seq in clear) and forged bytes, tagged
    with GMAC under a key derived from what the header shows, as the old -T did from the session id; None
    for any other datagram."""
    type_, direction, cid, seq, _, _ = datagram.parse_header(packet)
    if type_ != datagram.DATA:
        return None
    header = packet[: datagram.HEADER_SIZE]
    file_id, offset, payload = datagram.parse_data(packet[datagram.HEADER_SIZE : -datagram.TAG_SIZE])
    body = datagram.pack_data(file_id, offset, (EVIL * (len(payload) // len(EVIL) + 1))[: len(payload)])
    key = HKDF(hashes.SHA256(), 16, salt=None, info=b"fasp datagram auth v1").derive(cid)
    tag = AESGCM(key).encrypt(struct.pack("!IQ", direction, seq), b"", header + body)
    return header + body + tag


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_forged_t_datagrams_from_the_path_are_rejected(tmp_path):
    with relayed_server(tmp_path / "server") as (server, relay):
        reset(relay)
        forged = []

        def inject(data: bytes, direction: str) -> list[bytes]:
            fake = _forge(data) if direction == "up" else None
            if fake is None:
                return [data]
            forged.append(fake)
            return [fake, data]  # the forgery first: had it passed, the real datagram would be a replay

        relay.tamper = inject
        src = random_file(tmp_path / "t.bin", 2 << 20)
        digest = sha256(src)
        result = run_ascp(fasp_args(server, "-T", "-l", "200000", str(src), remote(server, "/t.bin")), server.env())
        relay.tamper = None
    assert len(forged) > 100  # the attack ran: every DATA datagram had a forged twin ahead of it
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert_same_file(src, server.docroot / "t.bin", digest)


def _key(
    client: bytes = b"c" * SHARE_BYTES, server: bytes = b"s" * SHARE_BYTES, sid: bytes = b"i" * 16, key_bytes: int = 16
) -> SessionKey:
    return SessionKey.derive(client, server, sid, key_bytes)


def test_both_shares_and_the_session_id_make_the_key():
    """Neither end alone chooses the key: changing either share (or the session id) changes it."""
    base = _key()
    variants = [_key(client=b"C" * SHARE_BYTES), _key(server=b"S" * SHARE_BYTES), _key(sid=b"j" * 16)]
    secrets = {base.secret, *(v.secret for v in variants)}
    assert len(secrets) == 4
    assert _key() == base  # both ends derive the same from the same inputs
    assert len({base.subkey(b"data 0", 16), base.subkey(b"data 1", 16), base.subkey(b"auth 0", 16)}) == 3


@pytest.mark.parametrize("key_bytes", [0, 16, 32])
def test_a_seal_opens_only_under_the_key_from_both_shares(key_bytes):
    """What one end seals, the other opens only if it derived the key from the same two shares."""
    sid = b"i" * 16
    body = datagram.pack_data(1, 0, b"payload")
    sealed = Seal(sid, _key(key_bytes=key_bytes), 0).seal(datagram.DATA, body, 0, 0)
    assert Seal(sid, _key(key_bytes=key_bytes), 1).open(sealed)[4] == body
    for other in (
        _key(client=b"C" * SHARE_BYTES, key_bytes=key_bytes),
        _key(server=b"S" * SHARE_BYTES, key_bytes=key_bytes),
    ):
        with pytest.raises(Rejected):
            Seal(sid, other, 1).open(sealed)


def test_shares_of_the_wrong_size_are_refused():
    with pytest.raises(EngineError, match="key shares must be 32 bytes"):
        _key(client=b"short")
    with pytest.raises(EngineError, match="cipher key size 7"):
        _key(key_bytes=7)


async def _hand_built_session(server, share: bytes) -> list[tuple[str, bool]]:
    """A client speaking the control protocol itself: it sends ``share`` in hello, then tries the UDP handshake
    under a key it chose alone (from its own share twice) and under the key from both shares."""
    async with asyncssh.connect(
        server.host,
        server.port,
        username=server.user,
        password=server.password,
        known_hosts=os.environ["FASP_KNOWN_HOSTS"],
        client_keys=None,
        agent_path=None,
    ) as conn:
        proc = await conn.create_process("fasp-ascp --server", encoding=None)
        sid = os.urandom(16)
        proc.stdin.write(
            control.frame(
                Hello(
                    v=VERSION,
                    session=sid.hex(),
                    share=share,
                    key_bytes=16,
                    direction="send",
                    dest="/",
                    datagram_size=1400,
                    udp_port=0,
                    rate=Rate(10000, 0, "fixed"),
                    opts=PeerOptions(),
                )
            )
        )
        decoder, messages = control.Decoder(), []
        while not messages:
            messages = decoder.feed(await asyncio.wait_for(proc.stdout.read(65536), 20))
        welcome = messages[0]
        assert isinstance(welcome, Welcome), welcome
        answered = []
        for name, key in (
            ("client alone", SessionKey.derive(share, share, sid, 16)),
            ("both shares", SessionKey.derive(share, welcome.share, sid, 16)),
        ):
            try:
                transport = await Transport.connect(server.host, welcome.udp_port, session_id=sid, key=key, timeout=1.5)
            except EngineError as exc:
                assert exc.code == ErrorCode.CONNECTION_TIMEOUT
                answered.append((name, False))
            else:
                await transport.close()
                answered.append((name, True))
        proc.stdin.write_eof()
        return answered


@pytest.mark.timeout(60)
def test_the_server_engine_takes_part_in_the_key(fasp_server_module):
    """Against the real server engine: a key the client picks alone is never answered on UDP, the key from
    both shares is (so a client, or whoever impersonates one, cannot choose the session key)."""
    answered = asyncio.run(_hand_built_session(fasp_server_module, os.urandom(SHARE_BYTES)))
    assert answered == [("client alone", False), ("both shares", True)]
