"""Docroot confinement by construction: every file operation goes through one handle on the root.

A client path is always read relative to the docroot (a leading "/" means the docroot, as on an
Aspera server). :class:`Docroot` holds an ``O_PATH`` descriptor of the root and resolves every path
from it, never as a string checked first and opened later:

* with ``openat2(2)`` (Linux >= 5.6), ``RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS``: the kernel
  refuses any step (``..``, a relative or absolute link, a /proc magic link) that leaves the root;
* otherwise (and for what the kernel refuses, so the verdict is the same) a walk of directory
  descriptors, one ``O_PATH | O_NOFOLLOW`` open per component: links are read and spliced in by
  us, ``..`` pops our own stack and never climbs above the root, an absolute link counts only if
  it names a place below the root's real path.

Links that stay inside are followed (users rely on it); one that leaves is error 41, a loop 63.
Operations on the last component (unlink, rename, mkdir, symlink, lstat) run on the parent's
descriptor with ``dir_fd=`` and never follow it; data files are opened ``O_NOFOLLOW`` where a link
there is never ours (partial files, sidecars, metafiles). Metadata is then changed through the
open descriptor (``fchown``, ``futimens``, ``fsetxattr``), so a link swapped in meanwhile cannot
redirect it. Errors name paths as the client gave them, never the server's real path.

:class:`Unconfined` has the same interface over plain paths: a client without a local docroot,
or a server under a stock sshd without FASP_DOCROOT (the whole filesystem as that user sees it).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from faspmanager.codes import EngineError, ErrorCode

SYS_OPENAT2 = 437  # the same number on every Linux architecture (the unified syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
MAX_LINKS = 40  # as the kernel (MAXSYMLINKS): more in one resolution is a loop
NO_OPENAT2_ENV = "FASP_NO_OPENAT2"
"""Set (to anything) to force the descriptor walk instead of openat2 (tests run both)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _openat2(dir_fd: int, path: str, flags: int, mode: int = 0) -> int:
    tmpfile = getattr(os, "O_TMPFILE", 0)  # includes O_DIRECTORY's bit: test it whole
    creates = flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)
    how = _OpenHow(flags | os.O_CLOEXEC, mode if creates else 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    fd = _syscall(
        ctypes.c_long(SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def openat2_works() -> bool:
    """Whether this kernel has openat2 (and no seccomp filter hides it)."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(_openat2(root, ".", os.O_PATH))
    except OSError:
        return False
    finally:
        os.close(root)
    return True


_OPENAT2 = openat2_works()


def _encodable(client_path: str) -> None:
    if "\0" in client_path:
        raise EngineError(ErrorCode.BAD_PATH, f"path contains a NUL byte: {client_path!r}")
    try:
        os.fsencode(client_path)
    except UnicodeEncodeError:
        raise EngineError(ErrorCode.BAD_PATH, f"path is not encodable as a file name: {client_path!r}") from None


def _outside(client_path: str, place: str = "the docroot") -> EngineError:
    return EngineError(ErrorCode.BAD_PATH, f"path is outside {place}: {client_path!r}")


def _loop(client_path: str) -> EngineError:
    return EngineError(ErrorCode.LINK_LOOP, f"symbolic link loop: {client_path!r}")


_ROOT_CODES = {errno.ENOENT: ErrorCode.NO_SUCH_FILE, errno.EACCES: ErrorCode.NO_PERMS, errno.ENOTDIR: ErrorCode.NOT_DIR}


def _root_code(exc: OSError) -> int:
    return ErrorCode.BAD_PATH if exc.errno is None else _ROOT_CODES.get(exc.errno, ErrorCode.BAD_PATH)


def _named(exc: OSError, client_path: str) -> OSError:
    """The same error naming the client's path (never the server's real one)."""
    if exc.errno is None:  # shutil's own refusals ("Cannot call rmtree on a symbolic link")
        return OSError(f"{client_path}: {exc}")
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), client_path)


class Files(Protocol):
    """What every file operation may use: both handles give it, over client paths. The primitives are each
    handle's own; the looks built from them (kind, isdir, scandir, prune) are shared here."""

    def norm(self, client_path: str) -> str: ...
    def open(self, client_path: str, flags: int, mode: int = 0o666) -> int: ...
    def opendir(self, client_path: str, *, path_only: bool = False) -> int: ...
    def at(self, client_path: str) -> AbstractContextManager[tuple[int, str]]: ...
    def stat(self, client_path: str, *, follow: bool = True) -> os.stat_result: ...
    def makedirs(self, client_path: str) -> None: ...
    def mkdir(self, client_path: str, mode: int = 0o777) -> None: ...
    def unlink(self, client_path: str) -> None: ...
    def rmdir(self, client_path: str) -> None: ...
    def rmtree(self, client_path: str) -> None: ...
    def replace(self, src: str, dst: str) -> None: ...
    def readlink(self, client_path: str) -> str: ...
    def symlink(self, target: str, client_path: str) -> None: ...
    def display(self, client_path: str) -> str: ...

    def contains(self, real: str) -> bool:
        """Whether the real path ``real`` is in reach of this handle's confinement (the engine keeps its own
        files, such as the resume key, out of it); an unconfined handle confines nothing."""
        return False

    def look(self, client_path: str, *, follow: bool = True) -> os.stat_result | None:
        """The path's stat, None if nothing is there (one look serves several questions about it)."""
        try:
            return self.stat(client_path, follow=follow)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    def kind(self, client_path: str, *, follow: bool = True) -> int | None:
        """The file type bits (stat.S_IFMT) of the path, None if nothing is there."""
        st = self.look(client_path, follow=follow)
        return None if st is None else stat.S_IFMT(st.st_mode)

    def isdir(self, client_path: str) -> bool:
        return self.kind(client_path) == stat.S_IFDIR

    def scandir(self, client_path: str) -> list[tuple[str, bool]]:
        """(name, is a link) for each entry of a directory, read through one descriptor of it."""
        fd = self.opendir(client_path)
        try:
            with os.scandir(fd) as entries:
                return [(entry.name, entry.is_symlink()) for entry in entries]
        finally:
            os.close(fd)

    def prune(self, client_path: str, keep: set[str]) -> int:
        """Delete every entry below ``client_path`` whose relative path is not in ``keep``; none if there is no
        ``client_path`` yet (a tree's first copy)."""
        try:
            fd = self.opendir(client_path)
        except FileNotFoundError:
            return 0
        try:
            return prune_fd(fd, keep)
        finally:
            os.close(fd)


class Docroot(Files):
    """The confined handle: every method takes a client path and stays below the root."""

    def __init__(self, root: str | int, *, use_openat2: bool | None = None, shown: str | None = None) -> None:
        """``root``: the docroot's path, or a directory descriptor this handle takes over. ``shown``: errors name
        a path as that directory joined with the root-relative path (a local root), not as the client's."""
        self.shown = shown
        self.place = "the docroot" if shown is None else shown
        self._fd = -1
        try:
            self._fd = root if isinstance(root, int) else os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self.real = os.readlink(f"/proc/self/fd/{self._fd}")
            self._error = None
        except OSError as exc:  # every operation fails alike (the server's own path is not the client's business)
            self.real = os.path.realpath(root) if isinstance(root, str) else "?"
            self._error = EngineError(_root_code(exc), f"the docroot is unavailable: {exc.strerror}")
        if use_openat2 is None:
            use_openat2 = _OPENAT2 and not os.environ.get(NO_OPENAT2_ENV)
        self.openat2 = use_openat2 and _OPENAT2

    @property
    def fd(self) -> int:
        if self._error is not None:
            raise self._error
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._error = EngineError(ErrorCode.BAD_PATH, "the docroot handle is closed")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # ---- resolution ------------------------------------------------------------------------------

    def norm(self, client_path: str) -> str:
        """The path as this handle resolves it: relative to the root (for messages and joins)."""
        _encodable(client_path)
        return client_path.lstrip("/") or "."

    def _kernel(self, client_path: str, flags: int, mode: int = 0) -> int:
        """openat2 beneath the root; what the kernel refuses as leaving (EXDEV: also an absolute link
        that may point inside) or as a loop (ELOOP) is decided by the walk, so both agree."""
        try:
            return _openat2(self.fd, self.norm(client_path), flags, mode)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.ELOOP, errno.EAGAIN):
                return self._walk_open(client_path, flags, mode)
            raise _named(exc, self.display(client_path)) from None

    def _walk(self, client_path: str, *, follow_last: bool, create: bool = False) -> tuple[int, str]:
        """(an owned descriptor of the real parent directory, the last name) for ``client_path``;
        name "." when the path ends at a directory reached by "..", "." or the root itself."""
        todo = [p for p in self.norm(client_path).split("/")][::-1]  # a stack: next component last
        stack = [os.dup(self.fd)]
        links = 0
        try:
            while todo:
                name = todo.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) == 1:
                        raise _outside(self.display(client_path), self.place)
                    os.close(stack.pop())
                    continue
                last = not any(p not in ("", ".") for p in todo)
                want_dir = last and bool(todo)  # "name/" or "name/.": a directory, reached through a link too
                if last and not follow_last and not want_dir:
                    return self._keep(stack), name
                try:
                    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
                except FileNotFoundError:
                    if last or not create:
                        if last:
                            return self._keep(stack), name
                        raise
                    os.mkdir(name, 0o777, dir_fd=stack[-1])
                    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=stack[-1])
                mode = os.fstat(fd).st_mode
                if stat.S_ISLNK(mode):
                    os.close(fd)
                    links += 1
                    if links > MAX_LINKS:
                        raise _loop(self.display(client_path))
                    target = os.readlink(name, dir_fd=stack[-1])
                    if target.startswith("/"):
                        below = self._below(target)
                        if below is None:
                            raise _outside(self.display(client_path), self.place)
                        while len(stack) > 1:
                            os.close(stack.pop())
                        target = below
                    todo.extend(target.split("/")[::-1])
                    continue
                if stat.S_ISDIR(mode) and not last:
                    stack.append(fd)
                    continue
                os.close(fd)
                if last and not (want_dir and not stat.S_ISDIR(mode)):
                    return self._keep(stack), name
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), self.display(client_path))
            return self._keep(stack), "."
        except OSError as exc:
            for fd in stack:
                os.close(fd)
            raise _named(exc, self.display(client_path)) from None
        except BaseException:
            for fd in stack:
                os.close(fd)
            raise

    @staticmethod
    def _keep(stack: list[int]) -> int:
        for fd in stack[:-1]:
            os.close(fd)
        return stack[-1]

    def _below(self, target: str) -> str | None:
        """An absolute link target as a path below the root, or None if it names a place outside."""
        norm = posixpath.normpath(target)
        if norm == self.real:
            return "."
        prefix = self.real.rstrip("/") + "/"
        return norm[len(prefix) :] if norm.startswith(prefix) else None

    def _walk_open(self, client_path: str, flags: int, mode: int = 0) -> int:
        follow = not flags & os.O_NOFOLLOW
        parent, name = self._walk(client_path, follow_last=follow)
        try:
            if name == ".":
                return os.open(".", flags | os.O_CLOEXEC, mode, dir_fd=parent)
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent)
        except OSError as exc:  # ELOOP: swapped for a link since the walk read it, which we never follow
            raise _named(exc, self.display(client_path)) from None
        finally:
            os.close(parent)

    @contextlib.contextmanager
    def at(self, client_path: str) -> Iterator[tuple[int, str]]:
        """(parent directory descriptor, last name) for an operation on the last component itself."""
        norm = self.norm(client_path).rstrip("/") or "."
        head, name = posixpath.split(norm)
        if name in ("", ".", ".."):
            raise EngineError(ErrorCode.BAD_PATH, f"not a name in a directory: {self.display(client_path)!r}")
        parent = self.opendir(head or ".", path_only=True)
        try:
            yield parent, name
        except OSError as exc:  # what the operation met, named as the client named it
            raise _named(exc, self.display(client_path)) from None
        finally:
            os.close(parent)

    # ---- operations ------------------------------------------------------------------------------

    def open(self, client_path: str, flags: int, mode: int = 0o666) -> int:
        """os.open below the root (``O_NOFOLLOW`` in ``flags``: a link as the last component is refused)."""
        if self.openat2:
            return self._kernel(client_path, flags, mode)
        return self._walk_open(client_path, flags, mode)

    def opendir(self, client_path: str, *, path_only: bool = False) -> int:
        flags = (os.O_PATH if path_only else os.O_RDONLY) | os.O_DIRECTORY
        return self.open(client_path, flags)

    def stat(self, client_path: str, *, follow: bool = True) -> os.stat_result:
        if follow:
            fd = self.open(client_path, os.O_PATH)
            try:
                return os.fstat(fd)
            finally:
                os.close(fd)
        norm = self.norm(client_path).rstrip("/") or "."
        if posixpath.basename(norm) in (".", ".."):
            return self.stat(client_path)
        with self.at(client_path) as (parent, name):
            return os.stat(name, dir_fd=parent, follow_symlinks=False)

    def makedirs(self, client_path: str) -> None:
        """mkdir -p below the root (links to directories inside are followed, as before)."""
        try:
            os.close(self.opendir(client_path, path_only=True))
            return
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        parent, name = self._walk(client_path, follow_last=True, create=True)
        try:
            if name != ".":
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=parent)
                os.close(os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent))
        except OSError as exc:
            raise _named(exc, self.display(client_path)) from None
        finally:
            os.close(parent)

    def mkdir(self, client_path: str, mode: int = 0o777) -> None:
        with self.at(client_path) as (parent, name):
            os.mkdir(name, mode, dir_fd=parent)

    def unlink(self, client_path: str) -> None:
        with self.at(client_path) as (parent, name):
            os.unlink(name, dir_fd=parent)

    def rmdir(self, client_path: str) -> None:
        with self.at(client_path) as (parent, name):
            os.rmdir(name, dir_fd=parent)

    def rmtree(self, client_path: str) -> None:
        """Remove a directory tree (shutil's descriptor-based walk: it never follows a link)."""
        with self.at(client_path) as (parent, name):
            shutil.rmtree(name, dir_fd=parent)

    def replace(self, src: str, dst: str) -> None:
        """Rename ``src`` over ``dst`` (the entries themselves: a link is moved, never followed)."""
        with self.at(src) as (src_dir, src_name), self.at(dst) as (dst_dir, dst_name):
            os.replace(src_name, dst_name, src_dir_fd=src_dir, dst_dir_fd=dst_dir)

    def readlink(self, client_path: str) -> str:
        with self.at(client_path) as (parent, name):
            return os.readlink(name, dir_fd=parent)

    def symlink(self, target: str, client_path: str) -> None:
        """Create a link a client sent, only if its target, read from the link's own directory, stays
        below the root: absolute targets are refused (the client cannot know the server's real path),
        a relative one must not climb above the root nor, where it exists, lead out through a link."""
        if target.startswith("/") or "\0" in target:
            raise EngineError(
                ErrorCode.BAD_PATH, f"{self.display(client_path)}: link target {target!r} leaves {self.place}"
            )
        with self.at(client_path) as (parent, name):
            here = self.where(parent)
            joined = posixpath.normpath(posixpath.join(here, target))
            if joined == ".." or joined.startswith("../"):
                raise EngineError(
                    ErrorCode.BAD_PATH, f"{self.display(client_path)}: link target {target!r} leaves {self.place}"
                )
            try:  # where it exists, as the kernel will read it (".." after a link is physical): beneath, or 41/63
                os.close(self.open(posixpath.join(here, target), os.O_PATH))
            except EngineError as exc:
                why = f"{target!r} leaves the docroot" if exc.code == ErrorCode.BAD_PATH else "loops"
                raise EngineError(exc.code, f"{self.display(client_path)}: link target {why}") from None
            except OSError:
                pass  # dangling inside: any later use resolves beneath the root again
            os.symlink(target, name, dir_fd=parent)

    def where(self, fd: int) -> str:
        """The root-relative path of an open directory (for link targets and messages)."""
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real == self.real:
            return "."
        below = self._below(real)
        if below is None:
            raise EngineError(ErrorCode.BAD_PATH, "a directory left the docroot")
        return below

    def display(self, client_path: str) -> str:
        if self.shown is None:
            return client_path
        return posixpath.normpath(posixpath.join(self.shown, client_path.lstrip("/")))

    def contains(self, real: str) -> bool:
        return real == self.real or real.startswith(self.real.rstrip("/") + "/")


def prune_fd(fd: int, keep: set[str], prefix: str = "") -> int:
    """Delete every entry below the directory ``fd`` whose relative path is not in ``keep`` (links are
    entries, never followed)."""
    deleted = 0
    with os.scandir(fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        is_dir = entry.is_dir(follow_symlinks=False)
        if rel in keep:
            if is_dir:
                sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    deleted += prune_fd(sub, keep, rel + "/")
                finally:
                    os.close(sub)
            continue
        if is_dir:
            shutil.rmtree(entry.name, dir_fd=fd)
        else:
            os.unlink(entry.name, dir_fd=fd)
        deleted += 1
    return deleted


class Unconfined(Files):
    """The same interface over the whole filesystem (paths relative to the working directory)."""

    def __init__(self, *, home: bool = False) -> None:
        self.home = home  # "~" is the user's home (a server under a stock sshd), not a name (a local path)

    def norm(self, client_path: str) -> str:
        _encodable(client_path)
        path = os.path.expanduser(client_path) if self.home else client_path
        return os.path.abspath(path or ".")

    def open(self, client_path: str, flags: int, mode: int = 0o666) -> int:
        return os.open(self.norm(client_path), flags | os.O_CLOEXEC, mode)

    def opendir(self, client_path: str, *, path_only: bool = False) -> int:
        return self.open(client_path, (os.O_PATH if path_only else os.O_RDONLY) | os.O_DIRECTORY)

    @contextlib.contextmanager
    def at(self, client_path: str) -> Iterator[tuple[int, str]]:
        head, name = os.path.split(self.norm(client_path))
        parent = os.open(head, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield parent, name
        finally:
            os.close(parent)

    def stat(self, client_path: str, *, follow: bool = True) -> os.stat_result:
        return os.stat(self.norm(client_path), follow_symlinks=follow)

    def makedirs(self, client_path: str) -> None:
        os.makedirs(self.norm(client_path), exist_ok=True)

    def mkdir(self, client_path: str, mode: int = 0o777) -> None:
        os.mkdir(self.norm(client_path), mode)

    def unlink(self, client_path: str) -> None:
        os.unlink(self.norm(client_path))

    def rmdir(self, client_path: str) -> None:
        os.rmdir(self.norm(client_path))

    def rmtree(self, client_path: str) -> None:
        shutil.rmtree(self.norm(client_path))

    def replace(self, src: str, dst: str) -> None:
        os.replace(self.norm(src), self.norm(dst))

    def readlink(self, client_path: str) -> str:
        return os.readlink(self.norm(client_path))

    def symlink(self, target: str, client_path: str) -> None:
        os.symlink(target, self.norm(client_path))

    def display(self, client_path: str) -> str:
        return self.norm(client_path)


class _Routed(Files):
    """A handle made of others: each path goes to the one :meth:`route` picks, named as that one names it.
    What may cross between them (a rename) is decided by :meth:`apart`."""

    def route(self, client_path: str) -> tuple[Files, str]:
        raise NotImplementedError

    def apart(self, src: str, dst: str) -> Exception:
        """The error for a rename between two handles."""
        raise NotImplementedError

    def open(self, client_path: str, flags: int, mode: int = 0o666) -> int:
        files, path = self.route(client_path)
        return files.open(path, flags, mode)

    def opendir(self, client_path: str, *, path_only: bool = False) -> int:
        files, path = self.route(client_path)
        return files.opendir(path, path_only=path_only)

    def at(self, client_path: str) -> AbstractContextManager[tuple[int, str]]:
        files, path = self.route(client_path)
        return files.at(path)

    def stat(self, client_path: str, *, follow: bool = True) -> os.stat_result:
        files, path = self.route(client_path)
        return files.stat(path, follow=follow)

    def makedirs(self, client_path: str) -> None:
        files, path = self.route(client_path)
        files.makedirs(path)

    def mkdir(self, client_path: str, mode: int = 0o777) -> None:
        files, path = self.route(client_path)
        files.mkdir(path, mode)

    def unlink(self, client_path: str) -> None:
        files, path = self.route(client_path)
        files.unlink(path)

    def rmdir(self, client_path: str) -> None:
        files, path = self.route(client_path)
        files.rmdir(path)

    def rmtree(self, client_path: str) -> None:
        files, path = self.route(client_path)
        files.rmtree(path)

    def replace(self, src: str, dst: str) -> None:
        (files, src_path), (dst_files, dst_path) = self.route(src), self.route(dst)
        if files is not dst_files:
            raise self.apart(src, dst)
        files.replace(src_path, dst_path)

    def readlink(self, client_path: str) -> str:
        files, path = self.route(client_path)
        return files.readlink(path)

    def symlink(self, target: str, client_path: str) -> None:
        files, path = self.route(client_path)
        files.symlink(target, path)


class Roots(_Routed):
    """Local paths as given (absolute, or relative to the working directory), each reached only beneath the
    innermost of ``roots`` that holds it: a worker's engine, confined to what its policy lets orders read or
    write (FASP_SEND_ROOTS / FASP_RECV_ROOTS). A path outside them all, or a link met on the way that leaves
    the root the path started in, is error 41 when it is followed, so a link planted while a transfer runs is
    refused as surely as one that was there when the order was checked. A root is matched by its name as
    given and by its real path; a path matching neither is matched by its own real path (where it leads is
    then resolved beneath that root again, so the lookup only picks the root)."""

    def __init__(self, roots: Iterable[str], *, use_openat2: bool | None = None) -> None:
        self._mounts: list[tuple[str, Docroot]] = []
        for root in roots:
            given = os.path.abspath(root)
            docroot = Docroot(given, use_openat2=use_openat2, shown=given)
            self._mounts += [(prefix, docroot) for prefix in {given, docroot.real}]
        self._mounts.sort(key=lambda mount: len(mount[0]), reverse=True)  # innermost first

    def route(self, client_path: str) -> tuple[Files, str]:
        _encodable(client_path)
        path = os.path.abspath(client_path or ".")
        for candidate in (path, os.path.realpath(path)):
            for prefix, docroot in self._mounts:
                if candidate == prefix or candidate.startswith(prefix.rstrip("/") + "/"):
                    return docroot, candidate[len(prefix) :].lstrip("/") or "."
        raise _outside(path, "the allowed local directories")

    def apart(self, src: str, dst: str) -> Exception:
        return OSError(errno.EXDEV, os.strerror(errno.EXDEV), self.display(src))  # as across file systems

    def norm(self, client_path: str) -> str:
        _encodable(client_path)
        return os.path.abspath(client_path or ".")

    def display(self, client_path: str) -> str:
        return self.norm(client_path)

    def contains(self, real: str) -> bool:
        return any(docroot.contains(real) for _, docroot in self._mounts)


class Beneath(_Routed):
    """A receiver's handle: the paths below ``root`` (the destination the user named) resolve beneath it as in a
    docroot of their own, the rest (the root itself and its spelling, a lone file's name and its partial beside
    it) through ``base`` as before. Names below the root come from the peer: a link it sent, or one leading out
    that was there already, can no longer take a file out of the destination (41), and a link it sends is made
    only if its target stays below the root."""

    def __init__(self, base: Files, root: str) -> None:
        self.base = base
        self._root = posixpath.normpath(root or ".")
        self._inner: Docroot | None = None  # opened on first use: the root may be made (-d) after this

    def _below(self, client_path: str) -> str | None:
        """``client_path`` relative to the root, or None if it is not below it (spelled as the receiver joins
        names to the root: a lexical relation, the kernel then resolves the rest beneath the root)."""
        norm = posixpath.normpath(client_path)
        if self._root == ".":
            below = not (norm in (".", "..") or norm.startswith(("../", "/")))
            rest = norm if below else None
        else:
            prefix = self._root.rstrip("/") + "/"
            rest = norm[len(prefix) :] if norm.startswith(prefix) and len(norm) > len(prefix) else None
        return rest + "/" if rest is not None and client_path.endswith("/") else rest

    def route(self, client_path: str) -> tuple[Files, str]:
        rest = self._below(client_path)
        if rest is None:
            return self.base, client_path
        if self._inner is None:
            self._inner = Docroot(self.base.opendir(self._root, path_only=True), shown=self._root)
        return self._inner, rest

    def apart(self, src: str, dst: str) -> Exception:
        return EngineError(ErrorCode.BAD_PATH, f"cannot move {src!r} to {dst!r}: only one is below {self._root!r}")

    def norm(self, client_path: str) -> str:
        return self.base.norm(client_path)

    def display(self, client_path: str) -> str:
        return self.base.display(client_path)

    def contains(self, real: str) -> bool:
        return self.base.contains(real)


def handle(
    root: str | None, *, home: bool = False, use_openat2: bool | None = None, roots: Iterable[str] | None = None
) -> Files:
    """The handle for a docroot, else for local ``roots`` when given, else the unconfined one (``home``: "~"
    expands)."""
    if root is not None:
        return Docroot(root, use_openat2=use_openat2)
    return Unconfined(home=home) if roots is None else Roots(roots, use_openat2=use_openat2)
