"""AEAD sealing of datagrams: nonce discipline and replay rejection (sans-IO).

Both ends share one key, so the 96-bit GCM nonce is ``direction u32 || seq u64``:
each end owns one direction and counts its own datagrams, hence a nonce never
repeats under the key, provided the key serves one pair of Seals only (the
engine draws a fresh key per session; never reuse one for a second channel). With a key (the default in ascp) bodies are AES-GCM
encrypted; without one (``-T``) bodies travel in clear followed by a GMAC tag
under a key derived from the session id, which still rejects corruption and
datagrams from anyone who does not know the session id (it is no secret from
an on-path observer: ``-T`` means no confidentiality, and no strong integrity).
"""
from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from faspmanager.codes import EngineError, ErrorCode

from . import wire

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
                    self._seen[lo:hi + 1] = bytes(hi + 1 - lo)
                else:
                    self._seen[lo:] = bytes(size - lo)
                    self._seen[:hi + 1] = bytes(hi + 1)
            self._high = seq
        self._seen[seq % size] = 1


def _auth_key(session_id: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 16, salt=None, info=b"fasp datagram auth v1").derive(session_id)


class Seal:
    """One end's sealer for outgoing datagrams and opener for the peer's."""

    def __init__(self, session_id: bytes, key: bytes | None, direction: int):
        if len(session_id) != 16:
            raise EngineError(ErrorCode.USAGE, "session id must be 16 bytes")
        if key is not None and len(key) not in (16, 24, 32):
            raise EngineError(ErrorCode.USAGE, "AES-GCM key must be 16, 24 or 32 bytes")
        self.session_id = session_id
        self.encrypted = key is not None
        self._aead = AESGCM(key if key is not None else _auth_key(session_id))
        self.direction = direction
        self._peer_direction = 1 - direction
        self._seq = 0
        self._prefix = {t: wire.header_prefix(t, direction, session_id) for t in wire.TYPES}
        self.replay = ReplayWindow()

    def seal(self, type_: int, body: bytes, ts: int, echo: int) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        header = self._prefix[type_] + wire.HEADER_TAIL.pack(seq, ts & wire.MAX_U32, echo & wire.MAX_U32)
        nonce = _NONCE.pack(self.direction, seq)
        if self.encrypted:
            return header + self._aead.encrypt(nonce, body, header)
        signed = header + body
        return signed + self._aead.encrypt(nonce, b"", signed)

    def open(self, datagram) -> tuple[int, int, int, int, bytes]:
        """Authenticate (and decrypt) a datagram: (type, seq, ts, echo, body), or Rejected unless it is
        the peer's, intact and new."""
        try:
            type_, direction, sid, seq, ts, echo = wire.parse_header(datagram)
        except wire.WireError as exc:
            raise Rejected(str(exc)) from None
        if sid != self.session_id:
            raise Rejected("foreign session")
        if direction != self._peer_direction:
            raise Rejected("wrong direction (reflected datagram)")
        if not self.replay.fresh(seq):
            raise Rejected("replayed or too old")
        nonce = _NONCE.pack(direction, seq)
        hs = wire.HEADER_SIZE
        try:
            if self.encrypted:
                body = self._aead.decrypt(nonce, datagram[hs:], datagram[:hs])
            else:
                self._aead.decrypt(nonce, datagram[-wire.TAG_SIZE:], datagram[:-wire.TAG_SIZE])
                body = bytes(datagram[hs:-wire.TAG_SIZE])
        except InvalidTag:
            raise Rejected("authentication failed") from None
        self.replay.mark(seq)
        return type_, seq, ts, echo, body
