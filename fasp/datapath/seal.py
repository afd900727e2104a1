"""AEAD sealing of datagrams: the session key both ends derive, nonce discipline, replay rejection (sans-IO).

The key: the client sends a random share in ``hello``, the server answers with its own in ``welcome`` (over
the SSH channel, whose host key the client checked), and both derive :class:`SessionKey` with HKDF over the
two shares, salted with the session id: neither end alone chooses it, and nothing on the UDP wire reveals it.
Each direction seals under its own subkey (labels ``data 0``/``data 1``, or ``auth 0``/``auth 1`` with
``-T``), and the HTTP fallback under a channel key derived apart, so a key never meets a nonce twice.

The 96-bit GCM nonce is ``direction u32 || seq u64``: each end counts its own datagrams (the header carries
the low 32 bits; the opener restores the rest from its replay window). What a mode gives:

- default (``-c aes128|aes192|aes256``): AES-GCM; confidentiality and integrity of the body, integrity of
  the header (associated data), and replay protection (the window below);
- ``-T``: bodies in clear followed by a GMAC tag under the session's auth subkey: integrity of header and
  body and replay protection, no confidentiality. An on-path observer who sees the connection id in every
  header still cannot forge or alter a datagram: the key comes from the shares, never from header fields.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fasp.datapath import datagram
from fasp.datapath.datagram import Buffer
from faspmanager.codes import EngineError, ErrorCode

_NONCE = struct.Struct("!IQ")


def _compiled() -> ModuleType | None:
    """The optional compiled batch path (fasp/datapath/_fastpath.c), unless absent, FASP_NO_FASTPATH is set, or
    it was built for another wire layout than datagram.py's (a stale build)."""
    if os.environ.get("FASP_NO_FASTPATH"):
        return None
    try:
        from fasp.datapath import _fastpath
    except ImportError:
        return None
    return _fastpath if getattr(_fastpath, "WIRE", None) == WIRE else None


WIRE = (
    datagram.VERSION,
    datagram.HEADER_SIZE,
    datagram.CONTROL_HEADER_SIZE,
    datagram.DATA_HEAD.size,
    datagram.TAG_SIZE,
)
FASTPATH = _compiled()
_HEADER_SIZES = bytes(datagram.header_size(t) if t in datagram.TYPES else 0 for t in range(16))  # by 4-bit type


class Rejected(Exception):
    """A datagram that is malformed, foreign, forged or replayed."""


class ReplayWindow:
    """Remembers which of the last ``size`` sequence numbers were accepted (one byte each, a ring)."""

    def __init__(self, size: int = 1 << 16):
        self._size = size
        self._seen = bytearray(size)
        self._high = -1

    @property
    def high(self) -> int:
        """The highest sequence number accepted (-1: none yet)."""
        return self._high

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
        self.cid = session_id[: datagram.CID_SIZE]
        self.encrypted = key.key_bytes > 0
        label, length = (b"data", key.key_bytes) if self.encrypted else (b"auth", 16)
        self._key = key.subkey(b"%s %d" % (label, direction), length)
        self._aead = AESGCM(self._key)
        self.fastpath = FASTPATH
        self._peer_key = key.subkey(b"%s %d" % (label, 1 - direction), length)
        self._peer_aead = AESGCM(self._peer_key)
        self.direction = direction
        self._peer_direction = 1 - direction
        self._seq = 0
        self._prefix = {t: datagram.header_prefix(t, direction, self.cid) for t in datagram.TYPES}
        self.replay = ReplayWindow()

    @property
    def next_seq(self) -> int:
        """The number the next datagram sealed gets."""
        return self._seq

    def seal(self, type_: int, body: Buffer, ts: int, echo: int) -> bytes:
        """``header || sealed body`` (``ts`` and ``echo`` go in every type's header but DATA's)."""
        seq = self._seq
        self._seq = seq + 1
        mask = datagram.MAX_U32
        if type_ == datagram.DATA:
            header = self._prefix[type_] + datagram.HEADER_TAIL.pack(seq & mask)
        else:
            header = self._prefix[type_] + datagram.CONTROL_TAIL.pack(seq & mask, ts & mask, echo & mask)
        nonce = _NONCE.pack(self.direction, seq)
        if self.encrypted:
            return header + self._aead.encrypt(nonce, body, header)
        signed = header + body
        return signed + self._aead.encrypt(nonce, b"", signed)

    def seal_data(
        self, file_id: int, base: int, block: datagram.Buffer, runs: Sequence[tuple[int, int]]
    ) -> list[bytes]:
        """DATA datagrams of one file, one per ``(offset, length)`` of ``runs``, whose bytes are in ``block``
        (read from file offset ``base``); the same bytes as :meth:`seal` of each, in one compiled call when
        the extension is built (the sender's per-datagram cost is mostly this loop's Python)."""
        fast = self.fastpath
        if fast is not None:
            sealed: list[bytes] = fast.seal_data(
                self._key,
                self.encrypted,
                self.direction,
                self._seq,
                self._prefix[datagram.DATA],
                file_id,
                base,
                block,
                runs,
            )
            self._seq += len(sealed)
            return sealed
        seal, pack, data = self.seal, datagram.pack_data, datagram.DATA
        return [seal(data, pack(file_id, off, block[off - base : off - base + n]), 0, 0) for off, n in runs]

    def open_batch(self, packets: Sequence[datagram.Buffer]) -> list[tuple[int, int, int, int, bytes] | None]:
        """:meth:`open` of each packet in order, None for a rejected one; in one compiled call when the
        extension is built (the receiver's per-datagram cost), the replay window applied here after it."""
        fast = self.fastpath
        if fast is None:
            return [self._open_or_none(packet) for packet in packets]
        replay = self.replay
        opened: list[tuple[int, int, int, int, bytes] | None] = fast.open_batch(
            self._peer_key,
            self.encrypted,
            datagram.VERSION,
            self._peer_direction,
            self.cid,
            _HEADER_SIZES,
            replay.high + 1,
            packets,
        )
        for i, got in enumerate(opened):
            if got is not None:
                if replay.fresh(got[1]):
                    replay.mark(got[1])
                else:
                    opened[i] = None
        return opened

    def _open_or_none(self, packet: datagram.Buffer) -> tuple[int, int, int, int, bytes] | None:
        try:
            return self.open(packet)
        except Rejected:
            return None

    def open(self, packet: datagram.Buffer) -> tuple[int, int, int, int, bytes]:
        """Authenticate (and decrypt) a datagram: (type, seq, ts, echo, body), or Rejected unless it is
        the peer's, intact and new. ``seq`` is the full 64-bit number (the nonce's)."""
        try:
            type_, direction, cid, low, ts, echo = datagram.parse_header(packet)
        except datagram.WireError as exc:
            raise Rejected(str(exc)) from None
        if cid != self.cid:
            raise Rejected("foreign session")
        if direction != self._peer_direction:
            raise Rejected("wrong direction (reflected datagram)")
        seq = datagram.full_seq(low, self.replay.high + 1)
        if not self.replay.fresh(seq):
            raise Rejected("replayed or too old")
        nonce = _NONCE.pack(direction, seq)
        hs = datagram.header_size(type_)
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
