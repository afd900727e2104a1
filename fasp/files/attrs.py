"""File metadata that travels with a file: times, owner, creation time, extended attributes and ACLs.

The reading side puts a file's metadata in the ``meta`` field of its ``file`` message
(:func:`collect`), the writing side gives it to the received file (:func:`apply`), each per its OWN
modes (``xattrs_mode`` and ``acls_mode`` in its options: ``--preserve-xattrs``/``--preserve-acls``
on the client, ``--remote-preserve-*`` on the server). A kind (xattrs, ACLs) travels only when
neither side's mode for it is ``none``; otherwise the writer leaves that kind alone.

* ``native``: xattrs are the file's ``user.*`` extended attributes, ACLs its POSIX ACLs
  (``system.posix_acl_access``/``_default``). No other namespace travels: ``security.*`` or
  ``trusted.*`` from a peer could grant privileges, so a writer refuses them.
* ``metafile``: as IBM's ascp does, the attributes live in a separate file named after the data
  file plus :data:`META_SUFFIX` (``readme.txt`` -> ``readme.txt.aspera-meta``). IBM does not publish
  its format; ours is UTF-8 JSON, readable and platform independent::

      {"format": "fasp-meta", "version": 1,
       "xattrs": {"user.colour": "Ymx1ZQ=="},                 # base64 of each value
       "acls": {"access": "user::rw-,user:12345:r--,group::r--,mask::r--,other::r--"}}

  ACLs are in ``getfacl -n`` form, entries joined by commas, numeric ids. A writer in metafile
  mode writes the metafile (always, so a stale one is replaced) and sets no native attribute; a
  reader in metafile mode reads it (a file without one has no attributes) and never sends a
  metafile as an ordinary file (:func:`hidden`).

``--preserve-creation-time``: Linux has no call that sets a file's birth time. The reader sends the
birth time that statx(2) reports (nothing when the filesystem cannot tell); the writer records it in
the ``user.fasp.creation_time`` xattr (decimal nanoseconds since the epoch). When that file is sent
on with the option, its recorded value wins over its own (newer) birth time, so the creation time
survives every hop.

Directories get times, owner, creation time and native attributes like files (their default ACL
is worth keeping), but no metafile: it would sit beside the directory, which may be a docroot. The
access time a directory carries is the one it has when sent: walking it, which reads it, came first.

Native attributes in a writer's mode become exactly the source's: ones the destination had but the
source lacks are removed (an overwritten file keeps its inode, and with it its old attributes).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import json
import os
import secrets
import stat
import struct

from fasp.errors import ProtocolError, os_error_code
from fasp.files.docroot import Unconfined
from fasp.options.peer import PeerOptions
from faspmanager.codes import EngineError, ErrorCode

META_SUFFIX = ".aspera-meta"
CREATION_XATTR = "user.fasp.creation_time"
ACL_NAMES = {"system.posix_acl_access": "access", "system.posix_acl_default": "default"}
_MISSING = (errno.ENODATA, errno.ENOTSUP)


def _failed(exc: OSError, path: str, what: str, default: int) -> EngineError:
    return EngineError(os_error_code(exc, default), f"{path}: cannot {what}: {exc.strerror}")


def _category(name: str) -> str | None:
    """ "acls", "xattrs", or None for an attribute that never travels."""
    if name in ACL_NAMES:
        return "acls"
    return "xattrs" if name.startswith("user.") else None


def _categories(opts: PeerOptions, mode: str) -> set[str]:
    return {what for what, its in (("xattrs", opts.xattrs_mode), ("acls", opts.acls_mode)) if its == mode}


def hidden(path: str, opts: PeerOptions) -> bool:
    """Whether a walked entry is a metafile this side reads as metadata, never as a file of its own."""
    return path.endswith(META_SUFFIX) and bool(_categories(opts, "metafile"))


def with_metafiles(names: set[str], opts: PeerOptions) -> set[str]:
    """--delete-before-transfer keeps ``names``: where this side writes metafiles, theirs too (a
    skipped file's metafile would otherwise be lost)."""
    return names | {n + META_SUFFIX for n in names} if _categories(opts, "metafile") else names


# --- reading side ---------------------------------------------------------------------------------


def collect(path: str, fd: int, st: os.stat_result, opts: PeerOptions, files=None) -> dict:
    """The ``meta`` of a file message: what the session's options have the receiver apply (its options are
    ours: hello carries them), so nothing else travels (times in ns, owner, attributes per this side's
    modes; a metafile is read through ``files``, the docroot handle, when given). Empty when nothing
    applies: without -p, ten thousand small files' offers were a third meta no one read."""
    metafile = set() if stat.S_ISDIR(st.st_mode) else _categories(opts, "metafile")
    meta: dict[str, object] = {}
    if opts.preserve_atime:
        meta["atime_ns"] = st.st_atime_ns
    if opts.preserve_mtime:
        meta["mtime_ns"] = st.st_mtime_ns
    if opts.preserve_uid:
        meta["uid"] = st.st_uid
    if opts.preserve_gid:
        meta["gid"] = st.st_gid
    kinds = sorted(_categories(opts, "native") | metafile)
    if kinds:
        meta["kinds"] = kinds
    found = {
        **_read_native(path, fd, _categories(opts, "native")),
        **_read_metafile(path + META_SUFFIX, metafile, files),
    }
    if found:
        meta["xattrs"] = {name: base64.b64encode(value).decode() for name, value in found.items()}
    if opts.preserve_ctime:
        created = creation_time(fd)
        if created is not None:
            meta["btime_ns"] = created
    return meta


def _read_native(path: str, fd: int, wanted: set[str]) -> dict[str, bytes]:
    if not wanted:
        return {}
    try:
        names = os.listxattr(fd)
        return {name: os.getxattr(fd, name) for name in names if _category(name) in wanted}
    except OSError as exc:
        if exc.errno == errno.ENOTSUP:  # a filesystem without xattrs: the file has none
            return {}
        raise _failed(exc, path, "read extended attributes", ErrorCode.DISK_READ) from None


def _read_metafile(meta_path: str, wanted: set[str], files=None) -> dict[str, bytes]:
    if not wanted:
        return {}
    try:
        fd = (files.open if files is not None else os.open)(meta_path, os.O_RDONLY | os.O_NOFOLLOW)
        with open(fd, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise _failed(exc, meta_path, "read metafile", ErrorCode.DISK_READ) from None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != "fasp-meta" or doc.get("version") != 1:
            raise ValueError("not a fasp-meta version 1 document")
        found = {}
        if "xattrs" in wanted:
            for name, value in dict(doc.get("xattrs") or {}).items():
                if _category(name) != "xattrs":
                    raise ValueError(f"attribute {name!r} is not a user attribute")
                found[name] = base64.b64decode(value, validate=True)
        if "acls" in wanted:
            by_kind = {kind: name for name, kind in ACL_NAMES.items()}
            for kind, text in dict(doc.get("acls") or {}).items():
                found[by_kind[kind]] = acl_blob(text)
        return found
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise EngineError(ErrorCode.DISK_READ, f"{meta_path}: unreadable metafile: {exc}") from None


def restore_atime(fd: int, st: os.stat_result, path: str) -> None:
    """--preserve-source-access-time: put back the access time reading moved (mtime as it is now)."""
    try:
        os.utime(fd, ns=(st.st_atime_ns, os.fstat(fd).st_mtime_ns))
    except OSError as exc:
        raise _failed(exc, path, "restore the access time", ErrorCode.DISK_WRITE) from None


# --- creation time --------------------------------------------------------------------------------

STATX_BTIME = 0x800
AT_EMPTY_PATH = 0x1000
_STATX_SIZE = 256
_STATX_BTIME_AT = 80  # offset of stx_btime (struct statx_timestamp: s64 seconds, u32 nanoseconds)
_statx = getattr(ctypes.CDLL(None, use_errno=True), "statx", None)


def birth_time(fd: int) -> int | None:
    """A file's birth time in ns from statx(2), or None when libc or the filesystem cannot report it."""
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(fd, b"", AT_EMPTY_PATH, STATX_BTIME, buf) != 0:
        return None
    (mask,) = struct.unpack_from("<I", buf.raw, 0)
    if not mask & STATX_BTIME:
        return None
    seconds, nanos = struct.unpack_from("<qI", buf.raw, _STATX_BTIME_AT)
    return seconds * 1_000_000_000 + nanos


def creation_time(fd: int) -> int | None:
    """The creation time to send: the one recorded by an earlier transfer, else the birth time."""
    try:
        recorded = os.getxattr(fd, CREATION_XATTR)
    except OSError:
        recorded = b""
    return int(recorded) if recorded.isdigit() else birth_time(fd)


# --- writing side ---------------------------------------------------------------------------------


def apply(fd: int, path: str, meta: object, opts: PeerOptions, *, files=None, named: str | None = None) -> None:
    """Give the received file open as ``fd`` its metadata per this side's options and modes: through the
    descriptor, so no link can redirect it. ``path`` names it in messages; ``named`` is its final name
    in ``files`` (the docroot handle), where its metafile goes beside it. EngineError on a failure."""
    if meta is None:
        return
    if not isinstance(meta, dict):
        raise ProtocolError("a file's meta must be an object")
    kinds = meta.get("kinds") or []
    if not isinstance(kinds, list) or not set(kinds) <= {"xattrs", "acls"}:
        raise ProtocolError("a file's meta kinds must be a list of xattrs/acls")
    attrs = _decode_attrs(meta.get("xattrs"))
    native = _categories(opts, "native") & set(kinds)
    _apply_native(fd, path, {n: v for n, v in attrs.items() if _category(n) in native}, native)
    metafile = _categories(opts, "metafile") & set(kinds)
    st = os.fstat(fd)
    if metafile and not stat.S_ISDIR(st.st_mode):
        _write_metafile(
            files,
            (named or path) + META_SUFFIX,
            {n: v for n, v in attrs.items() if _category(n) in metafile},
            st.st_mode & 0o666,
        )
    if opts.preserve_ctime and meta.get("btime_ns") is not None:
        _set(fd, path, CREATION_XATTR, str(_int(meta, "btime_ns")).encode())
    uid = _int(meta, "uid") if opts.preserve_uid else -1
    gid = _int(meta, "gid") if opts.preserve_gid else -1
    if (uid, gid) != (-1, -1):
        try:
            os.chown(fd, uid, gid)
        except OSError as exc:
            raise _failed(exc, path, f"change the owner to {uid}:{gid}", ErrorCode.DISK_WRITE) from None
    apply_times(fd, path, meta, opts)


def apply_times(fd: int, path: str, meta: dict, opts: PeerOptions) -> None:
    """--preserve-access-time / --preserve-modification-time (both with -p). Last of all, and again on
    a directory each time something lands in it, since that moves its mtime."""
    if opts.preserve_atime or opts.preserve_mtime:
        now = os.fstat(fd)
        atime = _int(meta, "atime_ns", signed=True) if opts.preserve_atime else now.st_atime_ns
        mtime = _int(meta, "mtime_ns", signed=True) if opts.preserve_mtime else now.st_mtime_ns
        try:
            os.utime(fd, ns=(atime, mtime))
        except OSError as exc:
            raise _failed(exc, path, "set the file times", ErrorCode.DISK_WRITE) from None


def _int(meta: dict, key: str, signed: bool = False) -> int:
    """A peer-sent integer (times before 1970 are negative, ids and creation records never)."""
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or (value < 0 and not signed):
        raise ProtocolError(f"a file's meta needs an integer {key}")
    return value


def _decode_attrs(raw: object) -> dict[str, bytes]:
    """The peer's attributes, refused outright if it names one that never travels."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError("a file's xattrs must be an object")
    out = {}
    for name, value in raw.items():
        if _category(name) is None or not isinstance(value, str):
            raise ProtocolError(f"attribute {name!r} cannot travel")
        try:
            out[name] = base64.b64decode(value, validate=True)
            if name in ACL_NAMES:
                acl_text(out[name])
        except ValueError as exc:
            raise ProtocolError(f"attribute {name!r}: {exc}") from None
    return out


def _set(fd: int, path: str, name: str, value: bytes) -> None:
    try:
        os.setxattr(fd, name, value)
    except OSError as exc:
        raise _failed(exc, path, f"set {name}", ErrorCode.DISK_WRITE) from None


def _apply_native(fd: int, path: str, attrs: dict[str, bytes], categories: set[str]) -> None:
    if not categories:
        return
    try:
        stale = [n for n in os.listxattr(fd) if _category(n) in categories and n not in attrs]
        for name in stale:
            os.removexattr(fd, name)
    except OSError as exc:
        if exc.errno not in _MISSING:
            raise _failed(exc, path, "remove stale extended attributes", ErrorCode.DISK_WRITE) from None
    for name, value in attrs.items():
        _set(fd, path, name, value)


def _write_metafile(files, meta_path: str, attrs: dict[str, bytes], mode: int) -> None:
    """Write atomically through ``files`` (a new file, never a link, renamed over the old name, so a
    link there is replaced, not followed)."""
    doc: dict = {"format": "fasp-meta", "version": 1}
    xattrs = {n: base64.b64encode(v).decode() for n, v in sorted(attrs.items()) if _category(n) == "xattrs"}
    acls = {ACL_NAMES[n]: acl_text(v) for n, v in sorted(attrs.items()) if n in ACL_NAMES}
    if xattrs:
        doc["xattrs"] = xattrs
    if acls:
        doc["acls"] = acls
    if files is None:
        files = Unconfined()
    directory, base = os.path.split(meta_path)
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}")
    created = False
    try:
        fd = files.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        created = True
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            json.dump(doc, handle, indent=1)
        files.replace(tmp, meta_path)
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                files.unlink(tmp)
        raise _failed(exc, meta_path, "write metafile", ErrorCode.DISK_WRITE) from None


# --- POSIX ACLs: the kernel's xattr form <-> getfacl text ------------------------------------------

_ACL_VERSION = 2
_NO_ID = 0xFFFFFFFF
_TAGS = {
    ("user", False): 0x01,
    ("user", True): 0x02,
    ("group", False): 0x04,
    ("group", True): 0x08,
    ("mask", False): 0x10,
    ("other", False): 0x20,
}
_TAG_NAMES = {tag: key for key, tag in _TAGS.items()}
_ENTRY = struct.Struct("<HHI")


def acl_text(blob: bytes) -> str:
    """``system.posix_acl_*`` value (u32 version, then u16 tag, u16 perm, u32 id entries) -> text."""
    if len(blob) < 4 or blob[:4] != struct.pack("<I", _ACL_VERSION) or (len(blob) - 4) % _ENTRY.size:
        raise ValueError("not a POSIX ACL (version 2)")
    entries = []
    for tag, perm, ident in _ENTRY.iter_unpack(blob[4:]):
        if tag not in _TAG_NAMES or perm > 7:
            raise ValueError(f"unknown ACL entry tag {tag} / permissions {perm}")
        kind, qualified = _TAG_NAMES[tag]
        bits = "".join(letter if perm & bit else "-" for letter, bit in zip("rwx", (4, 2, 1)))
        entries.append(f"{kind}:{ident if qualified else ''}:{bits}")
    return ",".join(entries)


def acl_blob(text: str) -> bytes:
    """The inverse of :func:`acl_text`; ValueError on anything else."""
    out = [struct.pack("<I", _ACL_VERSION)]
    for entry in text.split(","):
        kind, qualifier, bits = entry.split(":")
        if len(bits) != 3 or any(c not in (letter, "-") for c, letter in zip(bits, "rwx")):
            raise ValueError(f"bad ACL permissions {bits!r}")
        if qualifier and not qualifier.isdigit():
            raise ValueError(f"bad ACL qualifier {qualifier!r}")
        tag = _TAGS.get((kind, bool(qualifier)))
        if tag is None:
            raise ValueError(f"bad ACL entry {entry!r}")
        perm = sum(bit for c, bit in zip(bits, (4, 2, 1)) if c != "-")
        out.append(_ENTRY.pack(tag, perm, int(qualifier) if qualifier else _NO_ID))
    return b"".join(out)
