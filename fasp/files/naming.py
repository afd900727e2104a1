"""Where an incoming file lands, by IBM ascp's destination rule.

The destination is a directory (made by ``-d`` when missing) unless all of: ``-d`` is absent, exactly one
source file was given on the command line (``lone``: not a list file, not a pair list, no --src-base), and
the target is not an existing directory nor spelled with a trailing ``/``. Only then is it the file's new
name. Everything else goes inside the destination, keeping the source's top name (``dir`` sent to
``dest`` lands in ``dest/dir/...``).
"""

from __future__ import annotations

import posixpath
import stat

from fasp.files.docroot import Files
from faspmanager.codes import EngineError, ErrorCode


def destination(
    dest: str, rel: str, lone: bool, *, files: Files, create_dirs: bool, known: set[str] | None = None
) -> str:
    """The path (in ``files``' namespace, as the client spelled it) for the file ``rel`` of a transfer
    to ``dest``. Every look here goes through the handle, so nothing is decided on a path outside it.
    The destination root must exist unless ``create_dirs`` (-d); directories below it are made as needed.
    ``known``: directories this session already found or made, which are not looked at again (10,000 small
    files into one directory looked it up and made it 20,000 times). Only where files land is decided here:
    each is opened through the handle, so a directory replaced since (by a link out, say) confines as ever.
    """
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts or any("\0" in p for p in parts):
        raise EngineError(ErrorCode.BAD_PATH, f"invalid destination name {rel!r}")
    known = set() if known is None else known
    root = dest or "."
    if root not in known:
        if is_file_name(root, lone, create_dirs) and not files.isdir(root):
            parent = posixpath.dirname(root.rstrip("/")) or ("/" if root.startswith("/") else ".")
            if not files.isdir(parent):
                _make_root(files, parent, dest, create_dirs)
            return root
        if not files.isdir(root):
            if files.kind(root) is not None:
                raise EngineError(ErrorCode.NOT_DIR, f"destination {dest!r} is not a directory")
            _make_root(files, root, dest, create_dirs)
        known.add(root)
    if not parts:
        return root
    path = posixpath.join(root, *parts)
    parent = posixpath.dirname(path)
    if len(parts) > 1 and parent not in known:  # files may arrive before their directory's entry
        files.makedirs(parent)
        known.add(parent)
    return path


def landing(dest: str, rel: str, lone: bool, *, files: Files, create_dirs: bool) -> str:
    """Where :func:`destination` puts ``rel``, found without making or refusing anything: the name of a file
    that failed before it had a place (its events name it as the files that landed are named)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    root = dest or "."
    if parts and is_file_name(root, lone, create_dirs):
        try:
            parts = parts if files.isdir(root) else []
        except (OSError, EngineError):  # a root it cannot look at: the error being named says why
            parts = []
    return posixpath.join(root, *parts)


def is_file_name(dest: str, lone: bool, create_dirs: bool) -> bool:
    """Whether ``dest`` may name the file itself (if it is not an existing directory): IBM's rule."""
    return lone and not create_dirs and not dest.endswith("/")


def _make_root(files: Files, path: str, dest: str, create_dirs: bool) -> None:
    """Make the missing directory ``path`` (-d), else refuse: 6 when a file stands where it needs a directory
    (which -d cannot help), 4 when it is merely missing."""
    blocker = _file_in_the_way(files, path)
    if blocker is not None:
        raise EngineError(ErrorCode.NOT_DIR, f"destination {dest!r}: {blocker!r} is not a directory")
    if not create_dirs:
        raise EngineError(ErrorCode.NO_SUCH_FILE, f"destination directory {dest!r} does not exist (use -d)")
    try:
        files.makedirs(path)
    except OSError as exc:
        raise EngineError(
            ErrorCode.NO_PERMS if exc.errno == 13 else ErrorCode.NOT_DIR,
            f"cannot create destination {dest!r}: {exc.strerror}",
        ) from None


def _file_in_the_way(files: Files, path: str) -> str | None:
    """The nearest existing entry at or above the missing directory ``path`` if it is not a directory, else None."""
    at = path.rstrip("/") or "/"
    while True:
        kind = files.kind(at)
        if kind is not None:
            return None if kind == stat.S_IFDIR else at
        up = posixpath.dirname(at)
        if up in ("", at):  # the top of a relative path, or "/"
            return None
        at = up
