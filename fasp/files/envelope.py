"""Content protection (``--file-crypt``, passphrase in ASPERA_SCP_FILEPASS): files stored encrypted at rest.

An upload with ``encrypt`` stores ``NAME.aspera-env`` (``SUFFIX``); the server never sees the
passphrase or the plain bytes. A download with ``decrypt`` receives the envelope as is and opens it
once it is complete (``open_in_place``).

File format, version 2 (all integers big-endian)::

    header, 64 bytes:
      0  magic         8  b"FASPENV" + version byte 0x02
      8  salt         16  random, for scrypt
     24  nonce prefix  8  random per file
     32  block size    4  plain bytes per block (BLOCK = 64 KiB when written here)
     36  plain size    8  length of the plain file, or STREAMED (2**64 - 1): sealed as it came, its
                           length unknown then (a management-port stream); the stored size gives it
     44  scrypt        3  log2(N), r, p  (14, 8, 1)
     47  reserved      1  zero
     48  key check    16  HMAC-SHA256(check key, header[0:48])[:16]
    then blocks i = 0 .. n-1, n = max(1, ceil(plain size / block size)):
      AES-256-GCM(enc key, nonce = nonce prefix || uint32(i),
                  plaintext = plain[i*B : min((i+1)*B, plain size)],
                  associated data = header (64 bytes) || last flag (1 byte: 1 on block n-1, else 0))
      stored as ciphertext || 16-byte tag

A streamed envelope (``StreamSealer``) is laid out exactly as the envelope of a file of its length: its
plain size is the one whose ``sealed_size`` the stored size is (none: 48). The header is authenticated
either way, so STREAMED cannot be put in or taken out, and each block's index and last flag still stop
blocks being dropped, reordered, cut off at a block boundary or appended.

Keys: scrypt(passphrase, salt, N=2**14, r=8, p=1, 64 bytes) = enc key (32) || check key (32).
Overhead: 64 + 16 * n bytes (an empty file is one empty block: 80 bytes). Plain block i is at
stored offset 64 + i * (B + 16), so the sender seals any stored range on its own from the plain
blocks under it (``SealedSource.read``): pieces still travel in any order at any offset. Sealing is
deterministic for a given envelope, so a block read twice (piece boundaries, resume checks) gives the
same bytes; the source must not change during the upload (a changed block would be sealed twice
under one nonce), and the last few sealed blocks are cached so piece boundaries seal them once.

Opening (``open_in_place``) decrypts into a temporary name and renames it only when every block
authenticated, so a failure never leaves plain bytes behind (the envelope stays as it came):

- error 49 (FILE_DECRYPTION_PASS): the key check does not match: wrong passphrase (or a damaged
  header; the header is also bound to every block as associated data);
- error 48 (FILE_ENCRYPTION_ERROR): the envelope is malformed, of another version, truncated or
  extended (its size does not match the header), or a block fails authentication (tampered).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fasp.files.docroot import Files, Unconfined
from faspmanager.codes import EngineError, ErrorCode

SUFFIX = ".aspera-env"
VERSION = 2
MAGIC = b"FASPENV" + bytes([VERSION])
HEADER = 64
TAG = 16
BLOCK = 64 * 1024
SCRYPT = (14, 8, 1)  # log2(N), r, p
STREAMED = (1 << 64) - 1  # the plain size field of an envelope sealed before its length was known
_LAYOUT = struct.Struct(">8s16s8sIQBBBx")  # the first 48 bytes of the header
_CACHED = 32  # sealed blocks kept by a SealedSource (piece boundaries)


def sealed_size(plain_size: int, block: int = BLOCK) -> int:
    """Size of the envelope of a ``plain_size``-byte file."""
    return HEADER + plain_size + TAG * _blocks(plain_size, block)


def _blocks(plain_size: int, block: int) -> int:
    return max(1, -(-plain_size // block))


def _plain_size(stored_size: int, block: int) -> int | None:
    """The plain size whose envelope is ``stored_size`` bytes (a streamed one's); None if there is none."""
    if stored_size < HEADER + TAG:
        return None
    full, rest = divmod(stored_size - HEADER, block + TAG)
    plain = full * block + max(rest - TAG, 0)
    return plain if sealed_size(plain, block) == stored_size and _blocks(plain, block) < 1 << 32 else None


class Envelope:
    """The keys and header of one protected file."""

    def __init__(
        self,
        passphrase: str,
        salt: bytes,
        prefix: bytes,
        plain_size: int,
        block: int = BLOCK,
        scrypt: tuple[int, int, int] = SCRYPT,
        *,
        streamed: bool = False,
    ) -> None:
        """``streamed``: the header says STREAMED, not ``plain_size``. Opened, ``plain_size`` is what the stored
        size gives; sealing (``StreamSealer``) there is none yet (0), so each block is told whether it is last."""
        log_n, r, p = scrypt
        keys = hashlib.scrypt(
            passphrase.encode(), salt=salt, n=1 << log_n, r=r, p=p, dklen=64, maxmem=256 * r * (1 << log_n)
        )
        self._aead = AESGCM(keys[:32])
        self._prefix = prefix
        self.block = block
        self.plain_size = plain_size
        self.count = _blocks(plain_size, block)
        body = _LAYOUT.pack(MAGIC, salt, prefix, block, STREAMED if streamed else plain_size, *scrypt)
        self.header = body + hmac.new(keys[32:], body, "sha256").digest()[:16]
        self.size = HEADER + plain_size + TAG * self.count

    @classmethod
    def new(cls, passphrase: str, plain_size: int, block: int = BLOCK, *, streamed: bool = False) -> Envelope:
        return cls(passphrase, os.urandom(16), os.urandom(8), plain_size, block, streamed=streamed)

    @classmethod
    def open(cls, passphrase: str, header: bytes, stored_size: int) -> Envelope:
        """The envelope described by ``header`` of a ``stored_size``-byte file: EngineError 49 if the passphrase
        does not fit it, 48 if it is no envelope of this version, its parameters are out of range or the
        stored size is not its size (truncated or extended)."""
        if len(header) < HEADER or not header.startswith(MAGIC[:7]):
            raise EngineError(ErrorCode.FILE_ENCRYPTION_ERROR, "not a protected file (no envelope header)")
        magic, salt, prefix, block, plain_size, log_n, r, p = _LAYOUT.unpack(header[:48])
        if magic != MAGIC:
            raise EngineError(ErrorCode.FILE_ENCRYPTION_ERROR, f"unsupported envelope version {magic[7]}")
        if not (
            16 <= block <= 1 << 26
            and 10 <= log_n <= 20
            and 1 <= r
            and 1 <= p <= 16
            and 128 * r << log_n <= 1 << 30
            and (plain_size == STREAMED or -(-plain_size // block) < 1 << 32)
        ):
            raise EngineError(ErrorCode.FILE_ENCRYPTION_ERROR, "damaged envelope header")
        streamed = plain_size == STREAMED
        sized = _plain_size(stored_size, block) if streamed else plain_size
        envelope = cls(passphrase, salt, prefix, sized or 0, block, (log_n, r, p), streamed=streamed)
        if not hmac.compare_digest(envelope.header, header[:HEADER]):
            raise EngineError(ErrorCode.FILE_DECRYPTION_PASS, "wrong passphrase for a protected file")
        if sized is None or envelope.size != stored_size:
            raise EngineError(ErrorCode.FILE_ENCRYPTION_ERROR, "protected file damaged: truncated or extended envelope")
        return envelope

    def _nonce_ad(self, index: int, last: bool) -> tuple[bytes, bytes]:
        return self._prefix + index.to_bytes(4, "big"), self.header + (b"\1" if last else b"\0")

    def seal(self, index: int, plain: bytes | bytearray, last: bool | None = None) -> bytes:
        """Block ``index`` of the envelope (ciphertext and tag) from its plain bytes; ``last`` only where the
        size does not say it (a stream being sealed)."""
        nonce, ad = self._nonce_ad(index, index == self.count - 1 if last is None else last)
        return self._aead.encrypt(nonce, bytes(plain), ad)

    def unseal(self, index: int, sealed: bytes) -> bytes:
        """The plain bytes of block ``index``; EngineError 48 if it does not authenticate."""
        nonce, ad = self._nonce_ad(index, index == self.count - 1)
        try:
            return self._aead.decrypt(nonce, bytes(sealed), ad)
        except InvalidTag:
            raise EngineError(
                ErrorCode.FILE_ENCRYPTION_ERROR, f"protected file damaged: block {index} fails authentication"
            ) from None

    def stored_offset(self, index: int) -> int:
        return HEADER + index * (self.block + TAG)

    def plain_length(self, index: int) -> int:
        return min(self.block, self.plain_size - index * self.block) if index < self.count else 0


class SealedSource:
    """A plain file read as its envelope: header then sealed blocks, ``size`` bytes in all."""

    def __init__(self, fd: int, plain_size: int, envelope: Envelope) -> None:
        assert envelope.plain_size == plain_size
        self._fd = fd
        self._envelope = envelope
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.size = envelope.size

    def _sealed(self, index: int) -> bytes:
        block = self._cache.get(index)
        if block is None:
            env = self._envelope
            plain = os.pread(self._fd, env.plain_length(index), index * env.block)
            block = self._cache[index] = env.seal(index, plain)
            if len(self._cache) > _CACHED:
                self._cache.popitem(last=False)
        return block

    def read(self, length: int, offset: int) -> bytes:
        env = self._envelope
        end = min(offset + length, self.size)
        out = bytearray()
        if offset < HEADER:
            out += env.header[offset : min(end, HEADER)]
        pos = max(offset, HEADER)
        stride = env.block + TAG
        while pos < end:
            index = (pos - HEADER) // stride
            base = env.stored_offset(index)
            out += self._sealed(index)[pos - base : end - base]
            pos = base + stride
        return bytes(out)


def range_refused(name: str) -> EngineError:
    """Why a byte range of a file (a ranged START) does not travel with --file-crypt (USAGE): an envelope is
    sealed under one session's own header and opened only whole, so a range of it is part of no envelope that
    opens, and ranges sent apart are sealed under different keys."""
    return EngineError(
        ErrorCode.USAGE,
        f"{name}: a byte range of a protected file cannot travel: --file-crypt seals and opens a file whole "
        "(send all of it)",
    )


class StreamSealer:
    """Bytes of unknown total length sealed as they come, as a streamed envelope: ``feed`` gives the envelope
    bytes ready so far (the header first), ``close`` the rest. A block is sealed once a byte after it came, so
    the one ``close`` seals is flagged last (an empty stream is one empty block, as an empty file is)."""

    def __init__(self, passphrase: str) -> None:
        self._envelope = Envelope.new(passphrase, 0, streamed=True)
        self._out = bytearray(self._envelope.header)
        self._plain = bytearray()
        self._index = 0

    def feed(self, data: bytes) -> bytes:
        self._plain += data
        block, at = self._envelope.block, 0
        while len(self._plain) - at > block:
            self._seal(self._plain[at : at + block], last=False)
            at += block
        del self._plain[:at]
        return self._take()

    def close(self) -> bytes:
        self._seal(self._plain, last=True)
        self._plain = bytearray()
        return self._take()

    def _seal(self, plain: bytes | bytearray, last: bool) -> None:
        self._out += self._envelope.seal(self._index, plain, last)
        self._index += 1

    def _take(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out


def open_in_place(path: str, passphrase: str, files: Files | None = None) -> str | None:
    """Decrypt the complete file at ``path`` (in ``files``, the docroot handle) if it is an envelope: into
    the name without the suffix (or the same name); that path. None when the file is not an envelope (no
    suffix and no envelope header: it stays as it came). Errors (see the module docstring) leave no
    decrypted bytes behind."""
    if files is None:
        files = Unconfined()
    plain = path[: -len(SUFFIX)] if path.endswith(SUFFIX) else path
    with open(files.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as sealed:
        header = sealed.read(HEADER)
        if plain == path and not header.startswith(MAGIC[:7]):
            return None
        envelope = Envelope.open(passphrase, header, os.fstat(sealed.fileno()).st_size)
        tmp = plain + ".fasp-decrypting"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            with open(files.open(tmp, flags, 0o666), "wb") as out:
                for index in range(envelope.count):
                    block = sealed.read(envelope.plain_length(index) + TAG)
                    out.write(envelope.unseal(index, block))
        except BaseException:
            try:
                files.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    files.replace(tmp, plain)
    if plain != path:
        files.unlink(path)
    return plain
