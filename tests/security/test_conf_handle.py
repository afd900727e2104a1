"""The docroot handle on random trees: nothing it does touches anything outside the root.

Hypothesis builds trees of files, directories and links (relative, ``..``-laden, absolute inside and
outside, dangling, loops) and runs every kind of operation through :class:`fasp.files.docroot.Docroot`, with
openat2 and with the descriptor walk: each either acts below the root (the realpath of what it opened
is there; nothing outside changed) or fails (41 leaving, 63 looping, or the plain OSError of the
place it reached). Both implementations give the same verdict. Then the check-then-open race, made
deterministic: a component becomes a link to outside in the middle of a walk.

The operations that change things run in a forked child that has dropped to nobody (uid/gid 65534), on
a tree nobody owns, and every link target stays inside the test's temporary directory: should the
handle ever regress, an escape can only touch nobody's files, never the machine's (a mutated handle
run as root once emptied /tmp through a ``prune`` of ``../..``).
"""

from __future__ import annotations

import os
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fasp.files import docroot
from fasp.files.docroot import Docroot
from faspmanager.codes import EngineError, ErrorCode

NAMES = ["a", "b", "c", "a/b", "a/c", "b/a", "a/b/c"]
TARGETS = st.one_of(
    st.lists(
        st.sampled_from(["..", ".", "a", "b", "c", "x", "outside", "root", "secret", "new", ""]), min_size=1, max_size=5
    ).map("/".join),
    st.sampled_from(
        [
            "{root}",
            "{root}/a",
            "{root}/a/b",
            "{outside}",
            "{outside}/secret",
            "{outside}/new",
            "{outside}/sub/new",
            "{root}/../outside/secret",
            "{root}/missing/../a",
        ]
    ),
)
ENTRY = st.tuples(st.sampled_from(NAMES), st.sampled_from(["dir", "file", "link"]), TARGETS)
PATHS = st.lists(st.sampled_from(["..", ".", "", "a", "b", "c", "x", "secret", "outside"]), min_size=1, max_size=6).map(
    "/".join
)
OPS = st.sampled_from(
    [
        "read",
        "create",
        "stat",
        "lstat",
        "mkdir",
        "makedirs",
        "unlink",
        "rmdir",
        "symlink",
        "rename",
        "scandir",
        "readlink",
        "rmtree",
        "prune",
    ]
)


def _build(base: Path, entries) -> tuple[Path, Path]:
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (outside / "sub").mkdir()
    for name, kind, target in entries:
        path = root / name
        if os.path.lexists(path) or not path.parent.is_dir() or path.parent.is_symlink():
            continue
        if kind == "dir":
            path.mkdir()
        elif kind == "file":
            path.write_text(name)
        else:
            os.symlink(target.format(root=root, outside=outside) or ".", path)
    return root, outside


def _snapshot(outside: Path) -> dict:
    """Everything about the outside tree that an escape could change."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(outside):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                st.st_size,
                path.read_bytes() if path.is_file() else None,
            )
    st = outside.stat()
    out[str(outside)] = (st.st_mode, st.st_mtime_ns)
    return out


ACTIONS = {  # every other operation of the handle, as (handle, path, other path or link text)
    "lstat": lambda files, path, other: files.stat(path, follow=False),
    "mkdir": lambda files, path, other: files.mkdir(path),
    "makedirs": lambda files, path, other: files.makedirs(path),
    "unlink": lambda files, path, other: files.unlink(path),
    "rmdir": lambda files, path, other: files.rmdir(path),
    "symlink": lambda files, path, other: files.symlink(other, path),
    "rename": lambda files, path, other: files.replace(path, other),
    "scandir": lambda files, path, other: files.scandir(path),
    "readlink": lambda files, path, other: files.readlink(path),
    "rmtree": lambda files, path, other: files.rmtree(path),
    "prune": lambda files, path, other: files.prune(path, {"a"}),
}


def _run(files: Docroot, root: Path, op: str, path: str, other: str) -> str:
    """Do one operation; its verdict ("ok", "41", "63" or the errno name)."""
    real_root = os.path.realpath(root)
    try:
        if op in ("read", "create", "stat"):
            flags = {"read": os.O_RDONLY, "create": os.O_WRONLY | os.O_CREAT, "stat": os.O_PATH}[op]
            fd = files.open(path, flags, 0o600)
            try:
                where = os.readlink(f"/proc/self/fd/{fd}")
                assert where == real_root or where.startswith(real_root + "/"), f"{op} {path!r} opened {where}"
            finally:
                os.close(fd)
        else:
            ACTIONS[op](files, path, other)
        return "ok"
    except EngineError as exc:
        assert exc.code in (ErrorCode.BAD_PATH, ErrorCode.LINK_LOOP), exc
        # messages name the client's paths (and a link's text the client sent), never the server's real ones
        assert str(root.parent) not in exc.description.replace(repr(other), "")
        return str(int(exc.code))
    except OSError as exc:
        assert str(root.parent) not in str(exc)
        return exc.strerror or str(exc)


@pytest.mark.slow
@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "walk"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(ENTRY, max_size=8),
    ops=st.lists(st.tuples(OPS, PATHS, st.one_of(PATHS, TARGETS)), min_size=1, max_size=6),
)
def test_nothing_outside_is_ever_touched(use_openat2, entries, ops):
    if use_openat2 and not docroot.openat2_works():
        pytest.skip("this kernel has no openat2")

    def body(cage: Path) -> None:
        root, outside = _build(cage, entries)
        before = _snapshot(outside)
        files = Docroot(str(root), use_openat2=use_openat2)
        try:
            for op, path, other in ops:
                _run(files, root, op, path, other.format(root=root, outside=outside))
                assert _snapshot(outside) == before, f"{op} {path!r} changed something outside"
        finally:
            files.close()

    _as_nobody(body)


NOBODY = 65534


def _as_nobody(body: Callable[[Path], None]) -> None:
    """Run ``body(cage)`` in a forked child as nobody, ``cage`` a directory only nobody may write (the
    child's failure, with its traceback, fails the test in the parent)."""
    with tempfile.TemporaryDirectory() as base:
        os.chmod(base, 0o711)  # nobody may pass through, not list or write
        cage = Path(base) / "cage"
        cage.mkdir()
        if os.geteuid() == 0:
            os.chown(cage, NOBODY, NOBODY)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            os.close(read)
            verdict = b"ok"
            try:
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                assert os.geteuid() != 0, "the random operations never run as root"
                body(cage)
            except BaseException:
                verdict = traceback.format_exc().encode()
            finally:
                os.write(write, verdict)
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            verdict = pipe.read()
        os.waitpid(pid, 0)
        if verdict != b"ok":
            pytest.fail(verdict.decode(errors="replace"), pytrace=False)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(entries=st.lists(ENTRY, max_size=8), paths=st.lists(PATHS, min_size=1, max_size=8))
def test_openat2_and_the_walk_agree(entries, paths):
    """The same verdict, and the same file, whichever resolves."""
    if not docroot.openat2_works():
        pytest.skip("this kernel has no openat2")
    with tempfile.TemporaryDirectory() as base:
        root, _ = _build(Path(base), entries)
        kernel, walk = Docroot(str(root), use_openat2=True), Docroot(str(root), use_openat2=False)
        try:
            for path in paths:
                verdicts = []
                for files in (kernel, walk):
                    try:
                        fd = files.open(path, os.O_PATH)
                        verdicts.append(os.readlink(f"/proc/self/fd/{fd}"))
                        os.close(fd)
                    except EngineError as exc:
                        verdicts.append(int(exc.code))
                    except OSError as exc:
                        verdicts.append(exc.errno)
                assert verdicts[0] == verdicts[1], path
        finally:
            kernel.close()
            walk.close()


# --- attack 5, deterministic: a component swapped for a link while a walk holds its parent ----------


@pytest.mark.parametrize("use_openat2", [True, False], ids=["openat2", "walk"])
def test_component_swapped_for_a_link_mid_walk(tmp_path, monkeypatch, use_openat2):
    """The walk opened ``d``; then ``d`` is renamed away and replaced by a link to outside. The file is
    created in the directory the walk holds (still inside), never through the new link; a new
    resolution sees the link and refuses it (41)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    files = Docroot(str(root), use_openat2=False)
    real_open = os.open
    swapped = []

    def racing_open(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if path == "d" and not swapped:  # the walk has just taken d: now the attacker moves
            os.rename(root / "d", root / "d.old")
            os.symlink(outside, root / "d")
            swapped.append(True)
        return fd

    monkeypatch.setattr(docroot.os, "open", racing_open)
    fd = files.open("d/new", os.O_WRONLY | os.O_CREAT, 0o644)
    monkeypatch.undo()
    os.write(fd, b"inside")
    os.close(fd)
    assert swapped and list(outside.iterdir()) == []
    assert (root / "d.old" / "new").read_bytes() == b"inside"
    again = Docroot(str(root), use_openat2=use_openat2)
    with pytest.raises(EngineError) as info:
        again.open("d/new2", os.O_WRONLY | os.O_CREAT, 0o644)
    assert info.value.code == ErrorCode.BAD_PATH and list(outside.iterdir()) == []
    files.close()
    again.close()
