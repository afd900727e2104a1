"""Transfer orders: who, where, which files, and the ascp command line they turn into.

An order is plain data plus two renderings: ``ascp_opts()`` (argv without the
program and ``-M``) and ``ascp_env()`` (the secrets, which ascp reads from its
environment so they never show in ``ps``).
"""

from __future__ import annotations

import atexit
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable
from typing import TypeAlias

from .errors import AuthenticationError, InvalidPathError
from .options import TransferOptions

PathArg: TypeAlias = str | os.PathLike[str]
"""A path as callers may give one."""
Paths: TypeAlias = PathArg | Iterable[PathArg]
"""One path or a list of them (source_paths, dest_paths)."""

FILE_LIST_THRESHOLD = 200
"""Above this many sources, paths go in a ``--file-list`` file: argv has a length limit."""

_scratch: list[str] = []


def _scratch_dir() -> str:
    """Where a stand-alone ``ascp_opts()`` writes path lists (sessions use their own directory)."""
    if not _scratch:
        _scratch.append(tempfile.mkdtemp(prefix="faspmanager-lists-"))
        atexit.register(shutil.rmtree, _scratch[0], True)
    return _scratch[0]


def _paths(name: str, value: Paths) -> list[str]:
    items = [value] if isinstance(value, (str, os.PathLike)) else value
    try:
        paths = [os.fspath(item) for item in items]
    except TypeError:
        raise InvalidPathError(f"{name} must be a path or a list of paths, got {value!r}") from None
    if not paths:
        raise InvalidPathError(f"{name} is empty")
    for path in paths:
        if not isinstance(path, str) or not path or any(c in path for c in "\r\n\0"):
            raise InvalidPathError(f"{name} holds an invalid path {path!r} (empty, bytes, or a line break/NUL)")
    return paths


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
        raise ValueError(f"{name} must be a non-empty single-line str, got {value!r}")
    return value


def _write_list(directory: str, prefix: str, lines: list[str]) -> str:
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".txt", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.writelines(f"{line}\n" for line in lines)
    return path


class BaseTransferOrder:
    """Base class of a specification for an Aspera FASP transfer."""

    _mode = "send"  # ascp --mode: "send" for uploads, "recv" for downloads
    _keepalive = False  # files arrive through the management port

    def _init_remote(
        self,
        role: str,
        user: str,
        host: str,
        password: str | None,
        identity: PathArg | None,
        options: TransferOptions | None,
    ) -> tuple[str, str]:
        if not password and not identity:
            raise AuthenticationError(f"give {role}_pass or {role}_identity to authenticate")
        if options is None:
            options = TransferOptions()
        if not isinstance(options, TransferOptions):
            raise TypeError(f"options must be a TransferOptions, got {type(options).__name__}")
        self.options = options
        return _text(f"{role}_user", user), _text(f"{role}_host", host)

    def _remote(self) -> tuple[str, str, str | None, PathArg | None]:
        """(user, host, password, identity) of the remote end."""
        raise NotImplementedError

    def _sources(self) -> list[str]:
        """Paths named up front (file orders); persistent and stream orders name none."""
        sources: list[str] = getattr(self, "source_paths", [])
        return sources

    def _destinations(self) -> list[str] | None:
        dests: list[str] | None = getattr(self, "dest_paths", None)
        return dests

    def ascp_opts(self) -> list[str]:
        """Returns the options to pass to ascp when performing the transfer: IBM's ascp's; a session running
        our engine also passes the flags only it takes (TransferOptions.ascp_args)."""
        return self._ascp_args(_scratch_dir())

    def ascp_env(self) -> dict[str, str]:
        """The secrets for the child's environment (password, token, cookie, content passphrase)."""
        password = self._remote()[2]
        env = {"ASPERA_SCP_PASS": password} if password else {}
        env.update(self.options.ascp_env())
        return env

    def _ascp_args(self, list_dir: str, our_engine: bool = False) -> list[str]:
        user, host, _password, identity = self._remote()
        args = [f"--mode={self._mode}", f"--user={user}", f"--host={host}"]
        if identity:
            args += ["-i", os.fspath(identity)]
        args += self.options.ascp_args(our_engine)
        if self.options.content_protection_passphrase is not None:
            args.append("--file-crypt=" + ("encrypt" if self._mode == "send" else "decrypt"))
        if self._keepalive:
            args.append("--keepalive")
        args += self.options.extra_options or []
        return args + self._path_args(list_dir)

    def _path_args(self, list_dir: str) -> list[str]:
        root = self.options.destination_root
        if root.startswith("-"):  # the same directory, never read as a flag (-e/program, --ignore-host-key)
            root = "./" + root
        sources, dests = self._sources(), self._destinations()
        if dests is not None and self._mode == "recv" and any(posixpath.isabs(d) for d in dests):
            root, dests = _local_pairs(root, dests, confined=bool(self.options.apply_local_docroot))
        if dests is not None:
            pairs = [line for pair in zip(sources, dests) for line in pair]
            return [f"--file-pair-list={_write_list(list_dir, 'pairs-', pairs)}", root]
        if len(sources) > FILE_LIST_THRESHOLD or any(s.startswith("-") for s in sources):
            return [f"--file-list={_write_list(list_dir, 'sources-', sources)}", root]
        return [*sources, root]

    def __repr__(self) -> str:
        shown = {k: ("***" if k.endswith("_pass") and v else v) for k, v in vars(self).items()}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def _local_pairs(root: str, dests: list[str], confined: bool) -> tuple[str, list[str]]:
    """A download's destinations where the caller means them: an absolute path is that path, a relative one is
    under ``destination_root`` (itself under the working directory when relative). ascp reads a pair's
    destination under its DEST argument, so DEST becomes ``/`` and every destination the path below it.
    With --apply-local-docroot, ``/`` is the local docroot, so nothing is made absolute against our cwd."""

    def place(dest: str) -> str:
        joined = posixpath.join("/", root, dest) if confined else os.path.abspath(os.path.join(root, dest))
        return posixpath.normpath(joined).lstrip("/")

    return "/", [place(dest) for dest in dests]


def _pair(sources: list[str], dest_paths: Paths | None) -> list[str] | None:
    if dest_paths is None:
        return None
    dests = _paths("dest_paths", dest_paths)
    if len(dests) != len(sources):
        raise InvalidPathError(f"{len(dests)} dest_paths do not pair with {len(sources)} source_paths")
    return dests


class _Upload(BaseTransferOrder):
    def __init__(
        self,
        dest_user: str,
        dest_host: str,
        dest_pass: str | None,
        dest_identity: PathArg | None,
        options: TransferOptions | None,
    ) -> None:
        self.dest_user, self.dest_host = self._init_remote(
            "dest", dest_user, dest_host, dest_pass, dest_identity, options
        )
        self.dest_pass = dest_pass
        self.dest_identity = dest_identity

    def _remote(self) -> tuple[str, str, str | None, PathArg | None]:
        return self.dest_user, self.dest_host, self.dest_pass, self.dest_identity


class _Download(BaseTransferOrder):
    _mode = "recv"

    def __init__(
        self,
        source_user: str,
        source_host: str,
        source_pass: str | None,
        source_identity: PathArg | None,
        options: TransferOptions | None,
    ) -> None:
        self.source_user, self.source_host = self._init_remote(
            "source", source_user, source_host, source_pass, source_identity, options
        )
        self.source_pass = source_pass
        self.source_identity = source_identity

    def _remote(self) -> tuple[str, str, str | None, PathArg | None]:
        return self.source_user, self.source_host, self.source_pass, self.source_identity


class FileUpload(_Upload):
    """Specification for a file upload."""

    def __init__(
        self,
        source_paths: Paths,
        dest_user: str,
        dest_host: str,
        dest_paths: Paths | None = None,
        dest_pass: str | None = None,
        dest_identity: PathArg | None = None,
        options: TransferOptions | None = None,
    ) -> None:
        super().__init__(dest_user, dest_host, dest_pass, dest_identity, options)
        self.source_paths = _paths("source_paths", source_paths)
        self.dest_paths = _pair(self.source_paths, dest_paths)


class FileDownload(_Download):
    """Specification for a file download."""

    def __init__(
        self,
        source_paths: Paths,
        source_user: str,
        source_host: str,
        dest_paths: Paths | None = None,
        source_pass: str | None = None,
        source_identity: PathArg | None = None,
        options: TransferOptions | None = None,
    ) -> None:
        super().__init__(source_user, source_host, source_pass, source_identity, options)
        self.source_paths = _paths("source_paths", source_paths)
        self.dest_paths = _pair(self.source_paths, dest_paths)


class PersistentUpload(_Upload):
    """Specification for a persistent upload: files are added while the session runs."""

    _keepalive = True

    def __init__(
        self,
        dest_user: str,
        dest_host: str,
        dest_pass: str | None = None,
        dest_identity: PathArg | None = None,
        options: TransferOptions | None = None,
    ) -> None:
        super().__init__(dest_user, dest_host, dest_pass, dest_identity, options)


class PersistentDownload(_Download):
    """Specification for a persistent download: files are added while the session runs."""

    _keepalive = True

    def __init__(
        self,
        source_user: str,
        source_host: str,
        source_pass: str | None = None,
        source_identity: PathArg | None = None,
        options: TransferOptions | None = None,
    ) -> None:
        super().__init__(source_user, source_host, source_pass, source_identity, options)


class StreamUpload(_Upload):
    """Specification for a stream-to-file upload: bytes are written through the management port."""

    _keepalive = True

    def __init__(
        self,
        dest_user: str,
        dest_host: str,
        dest_pass: str | None = None,
        dest_identity: PathArg | None = None,
        options: TransferOptions | None = None,
    ) -> None:
        super().__init__(dest_user, dest_host, dest_pass, dest_identity, options)

    def _ascp_args(self, list_dir: str, our_engine: bool = False) -> list[str]:
        args = super()._ascp_args(list_dir, our_engine)
        return [*args[:-1], f"--chunk-size={self.options.chunk_size}", args[-1]]
