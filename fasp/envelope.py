"""Content protection (``--file-crypt``, passphrase in ASPERA_SCP_FILEPASS): files stored encrypted at rest.

An upload with ``encrypt`` stores ``name.aspera-env``: a 64-byte header (magic,
scrypt salt, CTR nonce, passphrase check) followed by the file under AES-256-CTR.
CTR is positional, so the sender encrypts any piece on its own and pieces still
travel out of order; the server never sees the passphrase. A download with
``decrypt`` receives the envelope as is and opens it once it is complete; a
wrong passphrase is error 49 and leaves the envelope in place.
"""
from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from faspmanager.codes import EngineError, ErrorCode

SUFFIX = ".aspera-env"
MAGIC = b"FASPENV1"
HEADER = 64
BLOCK = 1 << 20


class Envelope:
    """The keys and header of one protected file."""

    def __init__(self, passphrase: str, salt: bytes, nonce: bytes) -> None:
        keys = hashlib.scrypt(passphrase.encode(), salt=salt, n=1 << 14, r=8, p=1, dklen=64)
        self._key, mac = keys[:32], keys[32:]
        self._nonce = int.from_bytes(nonce, "big")
        self.header = (MAGIC + salt + nonce + hmac.new(mac, b"fasp-envelope", "sha256").digest()[:16]).ljust(
            HEADER, b"\0")

    @classmethod
    def new(cls, passphrase: str) -> "Envelope":
        return cls(passphrase, os.urandom(16), os.urandom(16))

    @classmethod
    def open(cls, passphrase: str, header: bytes) -> "Envelope":
        """The envelope described by ``header``; EngineError(49) if the passphrase does not fit it."""
        if len(header) < HEADER or not header.startswith(MAGIC):
            raise EngineError(ErrorCode.FILE_DECRYPTION_PASS, "not a protected file (no envelope header)")
        envelope = cls(passphrase, header[8:24], header[24:40])
        if not hmac.compare_digest(envelope.header[40:56], header[40:56]):
            raise EngineError(ErrorCode.FILE_DECRYPTION_PASS, "wrong passphrase for a protected file")
        return envelope

    def crypt(self, data: bytes, offset: int) -> bytes:
        """AES-CTR at byte ``offset`` of the plain file (encrypting and decrypting are the same)."""
        skip = offset % 16
        counter = (self._nonce + offset // 16) % (1 << 128)
        cipher = Cipher(algorithms.AES(self._key), modes.CTR(counter.to_bytes(16, "big"))).encryptor()
        return cipher.update(b"\0" * skip + bytes(data))[skip:]


class SealedSource:
    """A plain file read as its envelope: header then ciphertext, ``size`` bytes in all."""

    def __init__(self, fd: int, plain_size: int, envelope: Envelope) -> None:
        self._fd = fd
        self._envelope = envelope
        self.size = plain_size + HEADER

    def read(self, length: int, offset: int) -> bytes:
        end = min(offset + length, self.size)
        out = bytearray()
        if offset < HEADER:
            out += self._envelope.header[offset:min(end, HEADER)]
        start = max(offset, HEADER) - HEADER
        if end > HEADER:
            out += self._envelope.crypt(os.pread(self._fd, end - HEADER - start, start), start)
        return bytes(out)


def open_in_place(path: str, passphrase: str) -> str | None:
    """Decrypt the complete file at ``path`` if it is an envelope: into the name without the suffix
    (or the same name); that path. None when the file is not an envelope (it stays as it came)."""
    plain = path[: -len(SUFFIX)] if path.endswith(SUFFIX) else path
    with open(path, "rb") as sealed:
        header = sealed.read(HEADER)
        if not header.startswith(MAGIC):
            return None
        envelope = Envelope.open(passphrase, header)
        tmp = plain + ".fasp-decrypting"
        with open(tmp, "wb") as out:
            offset = 0
            while block := sealed.read(BLOCK):
                out.write(envelope.crypt(block, offset))
                offset += len(block)
    os.replace(tmp, plain)
    if plain != path:
        os.unlink(path)
    return plain
