"""Docroot confinement: every path a client names must stay inside the user's docroot.

A client path is always read relative to the docroot (a leading "/" means the
docroot, as on an Aspera server). The result is the REAL path: symlinks are
resolved, so a link that points out of the docroot is refused like "..". A path
that does not exist yet (a destination) is resolved through its deepest existing
parent, which is confined the same way.

Confinement is checked when the path is resolved; callers open the returned path
at once (a user who can rewrite links in their own docroot between the check and
the open is outside this module's threat model).
"""
from __future__ import annotations

import errno
import os
import stat

from faspmanager.codes import EngineError, ErrorCode


def confined(docroot: str, path: str) -> bool:
    """Whether the real path of ``path`` is ``docroot`` itself or lies below it (False if it cannot be a file name)."""
    root = os.path.realpath(docroot)
    try:
        real = os.path.realpath(path)
    except ValueError:  # a NUL byte, or a lone surrogate (UnicodeEncodeError)
        return False
    return _within(root, real)


def _within(root: str, real: str) -> bool:
    """Whether the real path ``real`` is the real path ``root`` or lies below it."""
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def resolve(docroot: str, client_path: str) -> str:
    """The absolute real path inside ``docroot`` for ``client_path``; EngineError(41) if it escapes."""
    if "\0" in client_path:
        raise EngineError(ErrorCode.BAD_PATH, f"path contains a NUL byte: {client_path!r}")
    try:
        os.fsencode(client_path)
    except UnicodeEncodeError:
        raise EngineError(ErrorCode.BAD_PATH, f"path is not encodable as a file name: {client_path!r}") from None
    root = os.path.realpath(docroot)
    real = os.path.realpath(os.path.join(root, client_path.lstrip(os.sep)))
    if not _within(root, real):  # both are real already: no second realpath of each (two per file received)
        raise EngineError(ErrorCode.BAD_PATH, f"path is outside the docroot: {client_path!r}")
    _refuse_link_loop(real, client_path)
    return real


def _refuse_link_loop(real: str, client_path: str) -> None:
    """realpath leaves a link loop unresolved; opening it later would fail less clearly."""
    try:
        looping = stat.S_ISLNK(os.lstat(real).st_mode)
    except OSError as exc:
        looping = exc.errno == errno.ELOOP
    if looping:
        raise EngineError(ErrorCode.LINK_LOOP, f"symbolic link loop: {client_path!r}")
