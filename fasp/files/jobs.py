"""Turning source arguments into file jobs on the sending side (walk, name, filter).

A job's ``rel`` is its destination path relative to the destination root,
'/'-separated: the receiver alone decides where that root is. ``lone`` marks
the one case where ascp names the destination after DEST itself rather than
placing the file inside it: a single plain file source.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fasp.files.docroot import Files
from fasp.options import filters
from fasp.options.peer import PeerOptions
from faspmanager.codes import EngineError, ErrorCode


@dataclass
class FileJob:
    arg: int  # FaspFileArgIndex
    path: str  # where to read it on this host
    rel: str  # destination path relative to the destination root
    lone: bool = False
    is_dir: bool = False
    size: int = 0
    start: int | None = None  # keepalive START ranges: only [start, end) travels
    end: int | None = None
    link: str | None = None  # --symbolic-links=copy: the link's own target, sent instead of its file


@dataclass
class Problem:
    """A source that cannot be sent: reported as FILEERROR (or SKIP when ``skip``)."""

    arg: int
    path: str
    code: int
    desc: str
    skip: bool = False
    rel: str | None = None  # one entry of a walked directory: its name there (``share`` gives it one node; None: the
    # source argument itself, which every node reports)


@dataclass(frozen=True)
class Rules:
    filters: tuple[str, ...] = ()  # -E/-N in command-line order, "- PATTERN"/"+ PATTERN" (fasp/options/filters.py)
    exclude_newer_than: int | None = None
    exclude_older_than: int | None = None
    symlinks: str = "follow"
    skip_special_files: bool = False
    skip_dir_dupes: bool = False

    @classmethod
    def from_opts(cls, opts: PeerOptions) -> Rules:
        return cls(
            opts.filters,
            opts.exclude_newer_than,
            opts.exclude_older_than,
            opts.symlinks,
            opts.skip_special_files,
            opts.skip_dir_dupes,
        )

    @property
    def copies_links(self) -> bool:
        return self.symlinks in ("copy", "copy+force")

    def matched(self, rel: str, is_dir: bool) -> str | None:
        """The -E pattern that leaves out the file or directory ``rel``, or None (no rule, or a -N first)."""
        rule = filters.deciding(filters.compiled(self.filters), rel, is_dir)
        return None if rule is None or rule.include else rule.pattern

    def excluded(self, rel: str, st: os.stat_result) -> str | None:
        """Why a file is left out, or None."""
        pattern = self.matched(rel, is_dir=False)
        if pattern is not None:
            return f"excluded by pattern {pattern!r}"
        if self.exclude_newer_than is not None and st.st_mtime > self.exclude_newer_than:
            return "excluded: newer than --exclude-newer-than"
        if self.exclude_older_than is not None and st.st_mtime < self.exclude_older_than:
            return "excluded: older than --exclude-older-than"
        return None


def top_name(source: str, src_base: str | None, pair_dest: str | None, files: Files) -> str:
    """The destination name of a source argument (before any walk below it), '/'-separated below DEST.

    "" (DEST itself) for a source spelled with no name of its own: ``/``, ``.`` or an empty path (on a server, the
    user's docroot), whose contents land in DEST as ``cp -r .``'s and rsync's do; and for the --src-base itself
    (ascp cuts the base off the source: nothing remains). The base and the source are compared as ``files`` reads
    them (in a docroot ``/base`` and ``base`` are one directory). Worked out on the spellings, never on a name the
    filesystem has outside them (the server's real docroot, the engine's working directory).
    """
    if pair_dest is not None:
        return pair_dest.strip("/")
    if src_base:
        rel = posixpath.relpath(_normal(files, source), _normal(files, src_base))
        if rel == ".." or rel.startswith("../"):
            raise EngineError(ErrorCode.BAD_PATH, f"source {source!r} is not under --src-base {src_base!r}")
        return "" if rel == "." else rel
    name = posixpath.basename(posixpath.normpath(source or "."))
    return "" if name in (".", "") else name


def _normal(files: Files, path: str) -> str:
    """``path`` as ``files`` resolves it (below the root for a docroot, else absolute), ``.`` and ``..`` folded."""
    return posixpath.normpath(files.norm(path))


def walk(arg: int, source: str, rel: str, *, files: Files, lone: bool, rules: Rules) -> Iterator[FileJob | Problem]:
    """Jobs for one source argument named ``source`` in ``files`` (the docroot handle on a server, where
    every look and later open stays below the root: a link leading out is 41, a loop 63). A job's
    ``path`` is how ``files`` names it, as the user sees it (messages name it so)."""
    top = files.display(source)
    try:
        st = files.stat(source, follow=False)
        if stat.S_ISLNK(st.st_mode):
            if rules.symlinks == "skip":
                yield Problem(arg, source, ErrorCode.NOT_REGULAR, "symbolic link skipped", skip=True)
                return
            if rules.copies_links:
                yield FileJob(arg, top, rel, lone=lone, link=files.readlink(source))
                return
            st = files.stat(source)
    except EngineError as exc:
        yield Problem(arg, source, exc.code, exc.description)
        return
    except OSError as exc:
        yield _unreadable(arg, source, exc)
        return
    if stat.S_ISDIR(st.st_mode):
        yield from _walk_dir(arg, top, rel, rules, files)
    else:
        yield _leaf(arg, source, top, rel, st, rules, lone=lone)


def _unreadable(arg: int, path: str, exc: OSError | EngineError, rel: str | None = None) -> Problem:
    """The problem for an entry that cannot be stat'ed: a link that never resolves (loop) is 63, one that
    leaves the docroot 41."""
    if isinstance(exc, EngineError):
        what = "symbolic link loop" if exc.code == ErrorCode.LINK_LOOP else "link leaves the docroot"
        return Problem(arg, path, exc.code, f"{path}: {what}", rel=rel)
    if exc.errno == errno.ELOOP:
        return Problem(arg, path, ErrorCode.LINK_LOOP, f"{path}: symbolic link loop", rel=rel)
    code = ErrorCode.NO_PERMS if exc.errno == errno.EACCES else ErrorCode.NO_SUCH_FILE
    return Problem(arg, path, code, f"{path}: {exc.strerror}", rel=rel)


def _leaf(
    arg: int, source: str, real: str, rel: str, st: os.stat_result, rules: Rules, lone: bool = False
) -> FileJob | Problem:
    if not stat.S_ISREG(st.st_mode):
        return Problem(
            arg, source, ErrorCode.NOT_REGULAR, f"{source}: not a regular file", skip=rules.skip_special_files, rel=rel
        )
    why = rules.excluded(rel, st)
    if why is not None:
        return Problem(arg, source, 0, why, skip=True, rel=rel)
    return FileJob(arg, real, rel, lone=lone, size=st.st_size)


def _walk_dir(arg: int, top: str, rel: str, rules: Rules, files: Files) -> Iterator[FileJob | Problem]:
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[str, str, frozenset]] = [(top, rel, frozenset())]
    while stack:
        path, prefix, ancestors = stack.pop()
        pattern = rules.matched(prefix, is_dir=True) if prefix else None  # "": DEST itself, no entry of the set
        if pattern is not None:  # an excluded directory's whole subtree stays behind (the source's own too)
            yield Problem(arg, path, 0, f"excluded by pattern {pattern!r}", skip=True, rel=prefix)
            continue
        try:
            st = files.stat(path)
            ident = (st.st_dev, st.st_ino)
            if ident in ancestors:
                yield Problem(arg, path, ErrorCode.LINK_LOOP, f"{path}: symbolic link loop", skip=True, rel=prefix)
                continue
            if rules.skip_dir_dupes and ident in seen:
                yield Problem(arg, path, 0, f"{path}: directory already traversed", skip=True, rel=prefix)
                continue
            seen.add(ident)
            entries = sorted(files.scandir(path))
        except EngineError as exc:
            yield Problem(arg, path, exc.code, exc.description, rel=prefix)
            continue
        except OSError as exc:
            yield Problem(
                arg,
                path,
                ErrorCode.NO_PERMS if exc.errno == 13 else ErrorCode.NO_SUCH_FILE,
                f"{path}: {exc.strerror}",
                rel=prefix,
            )
            continue
        yield FileJob(arg, path, prefix, is_dir=True)
        subdirs = []
        for name, is_link in entries:
            child, child_rel = f"{path.rstrip('/')}/{name}", (f"{prefix}/{name}" if prefix else name)
            try:
                if is_link:
                    if rules.symlinks == "skip":
                        yield Problem(
                            arg, child, ErrorCode.NOT_REGULAR, "symbolic link skipped", skip=True, rel=child_rel
                        )
                        continue
                    if rules.copies_links:
                        yield FileJob(arg, child, child_rel, link=files.readlink(child))
                        continue
                st = files.stat(child)  # a link is followed only while it stays below the root
            except (OSError, EngineError) as exc:  # (unreadable, or gone since the listing: another -C node's
                yield _unreadable(arg, child, exc, child_rel)  # --remove-after-transfer took it)
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append((child, child_rel, ancestors | {ident}))
            else:
                yield _leaf(arg, child, child, child_rel, st, rules)
        stack.extend(reversed(subdirs))


def share(
    items: Iterable[FileJob | Problem], node: int, nodes: int, split_above: int = 0
) -> Iterator[FileJob | Problem]:
    """-C NODE:NODES: this process's part of a source argument, so NODES processes together send it once.

    Directories, and problems that name no entry (an unreadable source or directory), everywhere; each file to the
    node a stable hash of its destination name picks, so the choice does not depend on which other files a
    node's walk saw (by turns it did: with --remove-after-transfer a node that walked after another had removed
    its files counted differently, and some files were sent by nobody); a problem with an entry (a file, link
    or name a walk found, or a single-file source) to the node its name picks, as its file would have gone
    (each node stats every entry: one whose file another node had sent and removed since the listing failed
    with 43, and an unreadable file was told once per node); a file above ``split_above`` bytes (when set) is
    cut into NODES byte ranges, one per process.
    """
    for item in items:
        if nodes == 1:
            yield item
        elif isinstance(item, Problem):
            if item.rel is None or _node_of(item.rel, nodes) == node:
                yield item
        elif item.is_dir or item.link is not None:
            yield item
        elif split_above and item.size > split_above:
            item.start, item.end = item.size * (node - 1) // nodes, item.size * node // nodes
            if item.end > item.start:
                yield item
        elif _node_of(item.rel, nodes) == node:
            yield item


def _node_of(rel: str, nodes: int) -> int:
    """The -C node (1..nodes) whose share the name ``rel`` is."""
    return zlib.crc32(rel.encode("utf-8", "surrogateescape")) % nodes + 1


def data_extents(fd: int, size: int, limit: int = 1024) -> list[list[int]] | None:
    """[start, end) ranges that hold data (holes of a sparse file left out), or None for "all of it"."""
    extents: list[list[int]] = []
    offset = 0
    try:
        while offset < size:
            start = os.lseek(fd, offset, os.SEEK_DATA)
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append([start, end])
            if len(extents) > limit:
                return None
            offset = end
    except OSError as exc:
        if exc.errno != 6:  # ENXIO: no data after offset
            return None
    if extents == [[0, size]]:
        return None
    return extents
