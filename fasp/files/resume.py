"""What to do with a file the receiver may already (partly) have: skip it, resume it, or start over.

:func:`plan` is pure (stats in, decision out) so every overwrite/resume rule is
testable without a transfer. The *watermark* sidecar makes resume exact: the
receiver writes pieces out of order, so a killed transfer leaves holes; the
sidecar records the offset below which every byte is known to be written.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import posixpath
import secrets
from dataclasses import dataclass

from fasp.files.docroot import Files
from faspmanager.codes import EngineError


@dataclass(frozen=True)
class Existing:
    """What the receiver found on disk for one incoming file."""

    size: int
    mtime: float
    ident: tuple[int, int] = (0, 0)  # device and inode: what an authenticated sidecar is bound to


@dataclass(frozen=True)
class Plan:
    action: str  # "send": receive from ``start``; "skip"; "verify": ask the sender to check [0, start)
    start: int = 0
    reason: str = ""


def plan(
    *,
    size: int,
    mtime: float,
    overwrite: str,
    resume: int,
    final: Existing | None,
    partial: Existing | None,
    watermark: int | None,
    sealed: bool = False,
) -> Plan:
    """Decide for a source of ``size``/``mtime``. ``partial`` is the file we would resume into
    (the suffixed file, or ``final`` itself when there is no suffix); ``watermark`` the sidecar's
    verified length, None when there is no (valid) sidecar. ``sealed``: the sender seals the file (an
    envelope) under a header of this session's own, so no earlier session's prefix belongs to it: a partial is
    sent again from 0 (neither size nor a digest could vouch for it)."""
    if final is not None:
        # a shorter file at the final name may be one our receiver left unfinished: it opens the file there as
        # the offer arrives, so an interrupted session leaves some at 0 bytes (with a sidecar at watermark 0, or,
        # one-piece files, none). Such a file is resumed (or sent from 0), never judged complete.
        resumable = partial is final and resume > 0 and final.size < size
        if resumable and watermark is None and final.size > 0:
            # no sidecar: nothing says this shorter file is an unfinished transfer of ours, so it is a
            # destination file like any other, and "never" / "older" protect it from being resumed into
            # (an empty one is no copy of a non-empty source whoever made it)
            refused = _refused(mtime, overwrite, final)
            if refused is not None:
                return refused
        if not resumable:
            verdict = _against_final(size, mtime, overwrite, resume, final)
            if verdict is not None:
                return verdict
            if partial is final:
                return Plan("send", 0)
    if resume == 0 or partial is None or sealed:
        return Plan("send", 0)
    have = partial.size if watermark is None else min(partial.size, watermark)
    if have <= 0 or have >= size:
        return Plan("send", 0)
    if resume == 1:
        return Plan("send", have, "resumed")
    return Plan("verify", have)


def _refused(mtime: float, overwrite: str, final: Existing) -> Plan | None:
    """The skip that "never" and "older" / "diff+older" impose on an existing destination file, if any."""
    if overwrite == "never":
        return Plan("skip", reason="destination exists (--overwrite=never)")
    if overwrite in ("older", "diff+older") and int(final.mtime) >= int(mtime):
        return Plan("skip", reason="destination is not older than the source")
    return None


def _against_final(size: int, mtime: float, overwrite: str, resume: int, final: Existing) -> Plan | None:
    """The overwrite policy against a complete-looking destination file; None means transfer it."""
    refused = _refused(mtime, overwrite, final)
    if refused is not None:
        return refused
    if overwrite in ("diff", "diff+older") and final.size == size and resume > 0:
        if resume == 1:
            return Plan("skip", reason="destination has the same size")
        return Plan("verify", size)
    return None


def after_verify(verdict: Plan, size: int, ok: bool) -> Plan:
    """The decision once the sender compared its own prefix digest."""
    if not ok:
        return Plan("send", 0)
    if verdict.start >= size:
        return Plan("skip", reason="destination is identical")
    return Plan("send", verdict.start, "resumed")


def sidecar_path(partial: str) -> str:
    head, tail = posixpath.split(partial)
    return posixpath.join(head, f".{tail}.fasp-resume")


# --- the sidecar, authenticated --------------------------------------------------------------------
#
# A sidecar says "the first HAVE bytes of this file are a source's", and a -k 2/3 resume then sends
# the sender a digest of those bytes. A client that could plant one (a file it uploads is just bytes)
# would choose HAVE and learn the digest of any prefix, one byte at a time. So a sidecar carries an
# HMAC under a key the client never sees, over the file's identity (path, device, inode) and the
# record; one that fails it is ignored (a full transfer), never trusted.

RESUME_KEY_ENV = "FASP_RESUME_KEY"
"""The server-side resume key (hex, at least 32 digits), when the operator sets one for the engines."""
KEY_FILE = "~/.fasp/resume.key"
"""Otherwise (a stock sshd, a client) a key kept in the user's home, 0600, made on first use."""
_key: bytes | None = None


def resume_key(files: Files) -> bytes:
    """The key sidecars are authenticated with: FASP_RESUME_KEY, else the key file, else (the file
    cannot be kept, or lies below the docroot where the client could read it) one for this process."""
    global _key
    if _key is None:
        _key = _load_key(files)
    return _key


def _load_key(files: Files) -> bytes:
    hexed = os.environ.get(RESUME_KEY_ENV, "")
    if hexed:
        try:
            key = bytes.fromhex(hexed)
        except ValueError:
            key = b""
        if len(key) >= 16:
            return key
    path = os.path.expanduser(KEY_FILE)
    real = os.path.realpath(path)
    if files.contains(real):
        return secrets.token_bytes(32)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as handle:
                key = handle.read()
            if len(key) >= 16:
                return key
            raise OSError("short key file") from None
        with os.fdopen(fd, "wb") as handle:
            key = secrets.token_bytes(32)
            handle.write(key)
        return key
    except OSError:
        return secrets.token_bytes(32)


def _mac(files: Files, partial: str, ident: tuple[int, int], size: int, mtime: float, have: int) -> str:
    record = json.dumps([1, posixpath.normpath(files.norm(partial)), *ident, size, int(mtime), have])
    return hmac.new(resume_key(files), record.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def read_watermark(files: Files, partial: str, ident: tuple[int, int], size: int, mtime: float) -> int | None:
    """The sidecar's watermark if it is ours for this file (``ident``: its device and inode) and
    describes this same source; 0 if it describes another or fails authentication; None if absent."""
    try:
        fd = files.open(sidecar_path(partial), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            record = json.loads(handle.read(4096))
        have = int(record["have"])
        if not hmac.compare_digest(str(record.get("mac", "")), _mac(files, partial, ident, size, mtime, have)):
            return 0
        return have
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, EngineError):
        return 0


RECORD_SIZE = 256
"""A sidecar is one record padded to this size, so each new watermark is one pwrite over the last (JSON ignores
the padding): a watermark per landed piece costs no file creation or rename (at 500 Mbit/s those were about a
seventh of the receiver's CPU). A kill -9 cannot tear a write; a torn one (power loss) fails the MAC, which means
start over, never trust."""


class Watermark:
    """The sidecar of one file being received, open while it is: :meth:`mark` records how much is good."""

    def __init__(self, files: Files, partial: str, ident: tuple[int, int], size: int, mtime: float) -> None:
        self._files, self._partial, self._ident, self._size, self._mtime = files, partial, ident, size, mtime
        path = sidecar_path(partial)
        with contextlib.suppress(FileNotFoundError):  # a fresh inode of our own: never written through a link
            files.unlink(path)  # or a name someone else holds
        self._fd = files.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)

    def mark(self, have: int) -> None:
        """Every byte below ``have`` is written."""
        size, mtime = self._size, self._mtime
        mac = _mac(self._files, self._partial, self._ident, size, mtime, have)
        record = json.dumps({"size": size, "mtime": int(mtime), "have": have, "mac": mac}).encode()
        os.pwrite(self._fd, record.ljust(RECORD_SIZE), 0)

    def close(self) -> None:
        os.close(self._fd)


def clear_watermark(files: Files, partial: str) -> None:
    try:
        files.unlink(sidecar_path(partial))
    except FileNotFoundError:
        pass
