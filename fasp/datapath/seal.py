"""AEAD sealing of datagrams: the session key both ends derive, nonce discipline, replay rejection (sans-IO).

The key: the client sends a random share in ``hello``, the server answers with its own in ``welcome`` (over
the SSH channel, whose host key the client checked), and both derive :class:`SessionKey` with HKDF over the
two shares, salted with the session id: neither end alone chooses it, and nothing on the UDP wire reveals it.
Each direction seals under its own subkey (labels ``data 0``/``data 1``, or ``auth 0``/``auth 1`` with
``-T``), and the HTTP fallback under a channel key derived apart, so a key never meets a nonce twice.

The 96-bit GCM nonce is ``direction u32 || seq u64``: each end counts its own datagrams. What a mode gives:

- default (``-c aes128|aes192|aes256``): AES-GCM; confidentiality and integrity of the body, integrity of
  the header (associated data), and replay protection (the window below);
- ``-T``: bodies in clear followed by a GMAC tag under the session's auth subkey: integrity of header and
  body and replay protection, no confidentiality. An on-path observer who sees the session id in every
  header still cannot forge or alter a datagram: the key comes from the shares, never from header fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fasp.datapath import datagram
from faspmanager.codes import EngineError, ErrorCode

_NONCE = struct.Struct("!IQ")


class Rejected(Exception):
    """A datagram that is malformed, foreign, forged or replayed."""


class ReplayWindow:
    """Remembers which of the last ``size`` sequence numbers were accepted (one byte each, a ring)."""

    def __init__(self, size: int = 1 << 16):
        self._size = size
        self._seen = bytearray(size)
        self._high = -1

    def fresh(self, seq: int) -> bool:
        """Not yet accepted and not older than the window."""
        if seq > self._high:
            return True
        if seq <= self._high - self._size:
            return False
        return not self._seen[seq % self._size]

    def mark(self, seq: int) -> None:
        size = self._size
        high = self._high
        if seq == high + 1:  # the common case: in order, the slot to set is the one the window frees
            self._seen[seq % size] = 1
            self._high = seq
            return
        if seq > high:
            gap = seq - high
            if gap >= size:
                self._seen = bytearray(size)
            else:
                lo, hi = (high + 1) % size, seq % size  # clear the slots the window slides over
                if lo <= hi:
                    self._seen[lo : hi + 1] = bytes(hi + 1 - lo)
                else:
                    self._seen[lo:] = bytes(size - lo)
                    self._seen[: hi + 1] = bytes(hi + 1)
            self._high = seq
        self._seen[seq % size] = 1


SHARE_BYTES = 32  # each end's random contribution to the session key
KEY_SIZES = (0, 16, 24, 32)  # AES-GCM key bytes by cipher; 0 = -T (GMAC only)


@dataclass(frozen=True)
class SessionKey:
    """What both ends derive from their two shares, and the cipher's key size (0: ``-T``, no encryption)."""

    secret: bytes = field(repr=False)
    key_bytes: int = 16

    def __post_init__(self) -> None:
        if len(self.secret) != 32 or self.key_bytes not in KEY_SIZES:
            raise EngineError(ErrorCode.FASP_PROTO, f"bad session key (cipher key size {self.key_bytes})")

    @classmethod
    def derive(cls, client_share: bytes, server_share: bytes, session_id: bytes, key_bytes: int) -> SessionKey:
        """The one derivation: HKDF-SHA256 over both shares, salted with the session id."""
        if len(client_share) != SHARE_BYTES or len(server_share) != SHARE_BYTES:
            raise EngineError(ErrorCode.FASP_PROTO, f"key shares must be {SHARE_BYTES} bytes each")
        secret = HKDF(hashes.SHA256(), 32, salt=session_id, info=b"fasp session v2").derive(client_share + server_share)
        return cls(secret, key_bytes)

    def subkey(self, label: bytes, length: int) -> bytes:
        """A key for one purpose (``label``), independent of every other label's."""
        return HKDF(hashes.SHA256(), length, salt=None, info=b"fasp v2 " + label).derive(self.secret)

    def channel(self, label: bytes) -> SessionKey:
        """The key of another channel of the session (the HTTP fallback): its nonces start again at 0."""
        return SessionKey(self.subkey(b"channel " + label, 32), self.key_bytes)


class Seal:
    """One end's sealer for outgoing datagrams and opener for the peer's."""

    def __init__(self, session_id: bytes, key: SessionKey, direction: int):
        if len(session_id) != 16:
            raise EngineError(ErrorCode.USAGE, "session id must be 16 bytes")
        self.session_id = session_id
        self.encrypted = key.key_bytes > 0
        label, length = (b"data", key.key_bytes) if self.encrypted else (b"auth", 16)
        self._aead = AESGCM(key.subkey(b"%s %d" % (label, direction), length))
        self._peer_aead = AESGCM(key.subkey(b"%s %d" % (label, 1 - direction), length))
        self.direction = direction
        self._peer_direction = 1 - direction
        self._seq = 0
        self._prefix = {t: datagram.header_prefix(t, direction, session_id) for t in datagram.TYPES}
        self.replay = ReplayWindow()

    def seal(self, type_: int, body: bytes, ts: int, echo: int) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        header = self._prefix[type_] + datagram.HEADER_TAIL.pack(seq, ts & datagram.MAX_U32, echo & datagram.MAX_U32)
        nonce = _NONCE.pack(self.direction, seq)
        if self.encrypted:
            return header + self._aead.encrypt(nonce, body, header)
        signed = header + body
        return signed + self._aead.encrypt(nonce, b"", signed)

    def open(self, packet: datagram.Buffer) -> tuple[int, int, int, int, bytes]:
        """Authenticate (and decrypt) a datagram: (type, seq, ts, echo, body), or Rejected unless it is
        the peer's, intact and new."""
        try:
            type_, direction, sid, seq, ts, echo = datagram.parse_header(packet)
        except datagram.WireError as exc:
            raise Rejected(str(exc)) from None
        if sid != self.session_id:
            raise Rejected("foreign session")
        if direction != self._peer_direction:
            raise Rejected("wrong direction (reflected datagram)")
        if not self.replay.fresh(seq):
            raise Rejected("replayed or too old")
        nonce = _NONCE.pack(direction, seq)
        hs = datagram.HEADER_SIZE
        try:
            if self.encrypted:
                body = self._peer_aead.decrypt(nonce, packet[hs:], packet[:hs])
            else:
                self._peer_aead.decrypt(nonce, packet[-datagram.TAG_SIZE :], packet[: -datagram.TAG_SIZE])
                body = bytes(packet[hs : -datagram.TAG_SIZE])
        except InvalidTag:
            raise Rejected("authentication failed") from None
        self.replay.mark(seq)
        return type_, seq, ts, echo, body
