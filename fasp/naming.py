"""Where an incoming file lands, as ascp names it.

A single plain file sent to a path that is not an existing directory takes
that path as its name; everything else goes inside the destination, keeping
the source's top name (``dir`` sent to ``dest`` lands in ``dest/dir/...``).
"""
from __future__ import annotations

import os
from typing import Callable

from faspmanager.codes import EngineError, ErrorCode


def destination(dest: str, rel: str, lone: bool, *, resolve: Callable[[str], str],
                create_dirs: bool, link: bool = False) -> str:
    """The real local path for the file ``rel`` of a transfer to ``dest`` (both as the client named them).

    ``resolve`` maps a client path to a real one (docroot confinement on a server).
    The destination root must exist unless ``create_dirs`` (-d); directories below it are made as needed.
    For a symbolic link (``link``) the last component is not followed: the link itself is the target.
    """
    if link:
        resolve = _not_last(resolve)
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts or any("\0" in p for p in parts):
        raise EngineError(ErrorCode.BAD_PATH, f"invalid destination name {rel!r}")
    root = resolve(dest)
    if lone and not os.path.isdir(root):
        parent = os.path.dirname(root) or "."
        if not os.path.isdir(parent):
            _make_root(parent, dest, create_dirs)
        return root
    if not os.path.isdir(root):
        if os.path.exists(root):
            raise EngineError(ErrorCode.NOT_DIR, f"destination {dest!r} is not a directory")
        _make_root(root, dest, create_dirs)
    if not parts:
        return root
    path = resolve(os.path.join(dest, *parts))
    os.makedirs(os.path.dirname(path), exist_ok=True)  # files may arrive before their directory's entry
    return path


def _not_last(resolve: Callable[[str], str]) -> Callable[[str], str]:
    return lambda path: os.path.join(resolve(os.path.dirname(path.rstrip("/"))), os.path.basename(path.rstrip("/")))


def _make_root(path: str, dest: str, create_dirs: bool) -> None:
    if not create_dirs:
        raise EngineError(ErrorCode.NO_SUCH_FILE, f"destination directory {dest!r} does not exist (use -d)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise EngineError(ErrorCode.NO_PERMS if exc.errno == 13 else ErrorCode.NOT_DIR,
                          f"cannot create destination {dest!r}: {exc.strerror}") from None
