"""Each option has an effect on disk that a transfer ignoring it would not have, in both directions.

Source-side options here (what is walked, filtered, removed or moved); destination-side
and session options in test_option_effects_dest.py. Every case runs the real engine
against fasp-server on loopback; upload and download use the same layout
(:class:`Ends`): the source tree on one side, the destination directory on the other.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine.helpers import MgmtListener, fasp_args, remote, run_ascp
from tests.support.files import assert_same_file, random_file, sha256
from tests.support.programs import ENGINE

DIRECTIONS = ["upload", "download"]


class Ends:
    """Where a test's source tree and destination directory are, for one direction.

    upload: source under the test's tmp_path, destination inside the server's docroot;
    download: the other way round. ``args`` builds the path arguments for fasp-ascp.
    """

    def __init__(self, server, tmp_path: Path, direction: str) -> None:
        self.server, self.direction = server, direction
        there = server.docroot / tmp_path.name  # unique per test invocation, in a shared docroot
        here = tmp_path / "local"
        self.src, self.dst = (here / "src", there / "dst") if direction == "upload" else (there / "src", here / "dst")
        self.src.mkdir(parents=True)
        self.dst.mkdir(parents=True)
        self.remote_side = there

    def client_path(self, path: Path) -> str:
        """``path`` as fasp-ascp names it: local as is, remote relative to the docroot."""
        if path.is_relative_to(self.server.docroot):
            return "/" + path.relative_to(self.server.docroot).as_posix()
        return str(path)

    def args(self, *sources: str, dest: Path | None = None) -> list[str]:
        dest = self.dst if dest is None else dest
        srcs = [self.client_path(self.src / s) for s in sources]
        if self.direction == "upload":
            return [*srcs, remote(self.server, self.client_path(dest))]
        return [*(remote(self.server, s) for s in srcs), str(dest)]


def transfer(server, *args: str, env: dict | None = None) -> tuple[int, str, MgmtListener]:
    """One fasp-ascp run with a management listener: (exit status, stderr, the events it heard)."""
    mgr = MgmtListener()
    try:
        result = run_ascp(fasp_args(server, "-M", str(mgr.port), *args), env or server.env())
        mgr.wait_for(lambda f: f.type in ("DONE", "ERROR"), 10)
    finally:
        mgr.close()
    return result.returncode, result.stderr.decode(errors="replace"), mgr


def ok(server, *args: str, env: dict | None = None) -> MgmtListener:
    code, err, mgr = transfer(server, *args, env=env)
    assert code == 0, err
    return mgr


def listing(root: Path) -> list[str]:
    """Every entry below ``root`` (links not followed), '/'-separated and sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def names(mgr: MgmtListener, event: str) -> dict[str, object]:
    """basename of File -> the frame, for one event type."""
    return {os.path.basename(f.get("File").rstrip("/")): f for f in mgr.of(event)}


# ---- symbolic links ---------------------------------------------------------------------------------


def _linked_tree(root: Path) -> dict[str, Path]:
    real = random_file(root / "real.bin", 3000)
    inner = random_file(root / "sub" / "inner.bin", 2000)
    (root / "file-link").symlink_to("real.bin")
    (root / "dir-link").symlink_to("sub")
    return {"real.bin": real, "sub/inner.bin": inner}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_symbolic_links_follow_and_skip(fasp_server_module, tmp_path, direction):
    """follow: a link arrives as the regular file (or directory) it points to; skip: it does not arrive."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    files = _linked_tree(ends.src / "tree")
    ok(server, "--symbolic-links=follow", *ends.args("tree", dest=ends.dst / "follow"), "-d")
    out = ends.dst / "follow" / "tree"
    assert listing(out) == ["dir-link", "dir-link/inner.bin", "file-link", "real.bin", "sub", "sub/inner.bin"]
    assert not (out / "file-link").is_symlink() and not (out / "dir-link").is_symlink()
    assert_same_file(files["real.bin"], out / "file-link")
    assert_same_file(files["sub/inner.bin"], out / "dir-link" / "inner.bin")

    mgr = ok(server, "--symbolic-links=skip", *ends.args("tree", dest=ends.dst / "skip"), "-d")
    out = ends.dst / "skip" / "tree"
    assert listing(out) == ["real.bin", "sub", "sub/inner.bin"]
    assert_same_file(files["real.bin"], out / "real.bin")
    assert sorted(names(mgr, "SKIP")) == ["dir-link", "file-link"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_link_loops_are_error_63(fasp_server_module, tmp_path, direction):
    """A link that resolves to itself is FILEERROR 63 (the rest arrives, the session ends 27); a link back
    to an ancestor is not walked again (SKIP); a looping source argument alone ends the session with 63."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    tree = ends.src / "loops"
    good = random_file(tree / "ok.bin", 1000)
    (tree / "self").symlink_to("self")
    (tree / "up").symlink_to(".")
    code, err, mgr = transfer(server, *ends.args("loops"))
    assert code == 27, err
    assert listing(ends.dst / "loops") == ["ok.bin"]
    assert_same_file(good, ends.dst / "loops" / "ok.bin")
    [error] = mgr.of("FILEERROR")
    assert error.int("Code") == 63 and error.get("File").endswith("self")
    assert "up" in names(mgr, "SKIP")
    assert mgr.of("ERROR")[0].int("Code") == 27

    code, err, mgr = transfer(server, *ends.args("loops/self"))
    assert code == 63, err
    assert mgr.of("ERROR")[0].int("Code") == 63
    assert listing(ends.dst) == ["loops", "loops/ok.bin"]


# ---- special files and directory duplicates ------------------------------------------------------------


def _special_files(root: Path) -> list[str]:
    """A fifo, a unix socket and a character device (null) under ``root``; their names."""
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(root / "sock"))
    finally:
        sock.close()
    os.mknod(root / "chardev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    return ["chardev", "fifo", "sock"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_skip_special_files(fasp_server_module, tmp_path, direction):
    """Without the option each fifo, socket and device is FILEERROR 21 (session 27); with it each is a
    SKIP and the session succeeds. Either way only the regular file arrives."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    regular = random_file(ends.src / "spec" / "regular.bin", 4000)
    specials = _special_files(ends.src / "spec")
    code, err, mgr = transfer(server, *ends.args("spec"))
    assert code == 27, err
    assert {name: f.int("Code") for name, f in names(mgr, "FILEERROR").items()} == dict.fromkeys(specials, 21)
    assert listing(ends.dst / "spec") == ["regular.bin"]

    shutil.rmtree(ends.dst / "spec")
    mgr = ok(server, "--skip-special-files", *ends.args("spec"))
    assert not mgr.of("FILEERROR") and sorted(names(mgr, "SKIP")) == specials
    assert listing(ends.dst / "spec") == ["regular.bin"]
    assert_same_file(regular, ends.dst / "spec" / "regular.bin")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_skip_dir_traversal_dupes(fasp_server_module, tmp_path, direction):
    """A directory reached twice (through a link) is sent twice by default, once with the option."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    data = random_file(ends.src / "dupes" / "a" / "f.bin", 2500)
    (ends.src / "dupes" / "b").symlink_to("a")
    ok(server, "-d", *ends.args("dupes", dest=ends.dst / "twice"))
    assert listing(ends.dst / "twice" / "dupes") == ["a", "a/f.bin", "b", "b/f.bin"]
    assert_same_file(data, ends.dst / "twice" / "dupes" / "b" / "f.bin")
    mgr = ok(server, "-d", "--skip-dir-traversal-dupes", *ends.args("dupes", dest=ends.dst / "once"))
    assert listing(ends.dst / "once" / "dupes") == ["a", "a/f.bin"]
    assert_same_file(data, ends.dst / "once" / "dupes" / "a" / "f.bin")
    assert len(mgr.of("STOP")) == 1


# ---- filters ------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_exclude_patterns_files_and_directories(fasp_server_module, tmp_path, direction):
    """-E matches a file or a directory by name (a directory's whole subtree stays behind)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    tree = ends.src / "ex"
    keep = [random_file(tree / "keep.bin", 1000), random_file(tree / "sub" / "z.bin", 1100)]
    for rel in ("x.tmp", "sub/y.tmp", "cache/c.bin", "sub/cache/d.bin"):
        random_file(tree / rel, 10)
    ok(server, "-E", "*.tmp", "-E", "cache", *ends.args("ex"))
    assert listing(ends.dst / "ex") == ["keep.bin", "sub", "sub/z.bin"]
    for f in keep:
        assert_same_file(f, ends.dst / "ex" / f.relative_to(tree))


FILTER_TREE = ("keep.bin", "z.tmp", "sub/x.bin", "other/w.tmp", "other/sub/y.bin")
FILTER_CASES = {
    "anchored": (["-E", "/ef/sub"], ["keep.bin", "other", "other/sub", "other/sub/y.bin", "other/w.tmp", "z.tmp"]),
    "directory-only": (["-E", "sub/"], ["keep.bin", "other", "other/w.tmp", "z.tmp"]),
    "anchored-glob": (
        ["-E", "/ef/*.tmp"],
        ["keep.bin", "other", "other/sub", "other/sub/y.bin", "other/w.tmp", "sub", "sub/x.bin"],
    ),
    "any-depth": (
        ["-E", "/ef/**/y.bin"],
        ["keep.bin", "other", "other/sub", "other/w.tmp", "sub", "sub/x.bin", "z.tmp"],
    ),
    "everything": (["-E", "/**"], None),
    "include-only": (["-N", "*.tmp", "-N", "/**/", "-E", "/**"], ["other", "other/sub", "other/w.tmp", "sub", "z.tmp"]),
    "include-first": (
        ["-N", "z.tmp", "-E", "*.tmp"],
        ["keep.bin", "other", "other/sub", "other/sub/y.bin", "sub", "sub/x.bin", "z.tmp"],
    ),
    "exclude-first": (
        ["-E", "*.tmp", "-N", "z.tmp"],
        ["keep.bin", "other", "other/sub", "other/sub/y.bin", "sub", "sub/x.bin"],
    ),
    "include-anchored": (["-N", "/ef/sub/x.bin", "-E", "/**"], ["sub", "sub/x.bin"]),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", FILTER_CASES)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_filter_pattern_forms(fasp_server_module, tmp_path, direction, case):
    """IBM's pattern forms (fasp/options/filters.py): a leading '/' anchors at the transfer's root (the source's
    own name first), a trailing '/' names directories only, '/**' spans directories; '/**' alone leaves out all.
    -E and -N rules apply in command-line order, the first that matches deciding; an anchored -N keeps the
    directories on its way."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    made = {rel: random_file(ends.src / "ef" / rel, 500 + 100 * i) for i, rel in enumerate(FILTER_TREE)}
    flags, expected = FILTER_CASES[case]
    ok(server, *flags, *ends.args("ef"))
    if expected is None:
        assert listing(ends.dst) == []
        return
    assert listing(ends.dst / "ef") == expected
    for rel in expected:
        if rel in made:
            assert_same_file(made[rel], ends.dst / "ef" / rel)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("relative", [False, True], ids=["epoch", "before-now"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_exclude_newer_and_older_than(fasp_server_module, tmp_path, direction, relative):
    """--exclude-older-than / --exclude-newer-than leave out files by mtime: a bound is seconds since the
    epoch, or with a minus sign seconds before now (ascp's MTIME)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    now = int(time.time())
    ages = (now - 10 * 86400, now - 2 * 86400, now - 60) if relative else (1_000_000_000, 1_500_000_000, 2_000_000_000)
    bounds = ("-432000", "-86400") if relative else ("1200000000", "1800000000")
    made = {}
    for name, mtime in zip(("old.bin", "mid.bin", "new.bin"), ages):
        made[name] = random_file(ends.src / "aged" / name, 1500)
        os.utime(made[name], (mtime, mtime))
    mgr = ok(server, f"--exclude-older-than={bounds[0]}", f"--exclude-newer-than={bounds[1]}", *ends.args("aged"))
    assert listing(ends.dst / "aged") == ["mid.bin"]
    assert_same_file(made["mid.bin"], ends.dst / "aged" / "mid.bin")
    assert sorted(names(mgr, "SKIP")) == ["new.bin", "old.bin"]


@pytest.mark.timeout(60)
def test_source_prefix_and_src_base_on_download(fasp_server_module, tmp_path):
    """Both name remote sources when downloading: --source-prefix is put before each source path,
    --src-base is cut from it to name the destination (upload: test_file_options, test_transfer)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, "download")
    deep = random_file(ends.src / "base" / "x" / "y" / "z.bin", 3333)
    prefix = ends.client_path(ends.src / "base" / "x")
    ok(server, f"--source-prefix={prefix}", remote(server, "y/z.bin"), str(ends.dst / "prefixed.bin"))
    assert_same_file(deep, ends.dst / "prefixed.bin")
    assert run_ascp(fasp_args(server, remote(server, "y/z.bin"), str(ends.dst)), server.env()).returncode == 4

    ok(server, f"--src-base={ends.client_path(ends.src / 'base')}", *ends.args("base/x/y/z.bin"))
    assert_same_file(deep, ends.dst / "x" / "y" / "z.bin")
    ok(server, *ends.args("base/x/y/z.bin", dest=ends.dst / "x"))
    assert_same_file(deep, ends.dst / "x" / "z.bin")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_src_base_is_read_as_the_paths_are(fasp_server_module, tmp_path, direction):
    """--src-base and the sources are compared as the side holding them reads both: in a docroot ``/base`` and
    ``base`` are one directory (the server compared the strings: 41 'not under'). The base itself as a source
    leaves nothing of its path: its contents land in DEST itself (it was 41 'not under' itself)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    deep = random_file(ends.src / "base" / "x" / "y" / "z.bin", 2222)
    base, spelled = ends.client_path(ends.src / "base"), ends.client_path(ends.src / "base" / "x")
    if direction == "download":  # the other spelling of each, relative to the docroot
        for n, (flag, source) in enumerate(((base.lstrip("/"), spelled), (base, spelled.lstrip("/")))):
            dest = ends.dst / f"mixed{n}"
            ok(server, "-d", f"--src-base={flag}", remote(server, source), str(dest))
            assert listing(dest) == ["x", "x/y", "x/y/z.bin"]
            assert_same_file(deep, dest / "x" / "y" / "z.bin")
    dest = ends.dst / "itself"
    ok(server, "-d", f"--src-base={base}", *ends.args("base", dest=dest))
    assert listing(dest) == ["x", "x/y", "x/y/z.bin"]
    assert_same_file(deep, dest / "x" / "y" / "z.bin")


# ---- what happens to the sources afterwards -------------------------------------------------------------

# (direction, flags, what is left of src/tree) for the pairs test_file_options.py does not already run:
# there, download + move + --remove-empty-directories and upload + remove + --remove-empty-source-directory.
KEEP = ["-E", "*.keep"]
SOURCE_ACTIONS = [
    (
        "download",
        ["--remove-after-transfer", *KEEP],
        ["tree", "tree/a", "tree/b", "tree/b/c", "tree/k", "tree/k/x.keep"],
    ),
    ("upload", ["--remove-after-transfer", "--remove-empty-directories", *KEEP], ["tree", "tree/k", "tree/k/x.keep"]),
    ("download", ["--remove-after-transfer", "--remove-empty-source-directory"], []),
    (
        "download",
        ["--remove-after-transfer", "--remove-empty-source-directory", *KEEP],
        ["tree", "tree/k", "tree/k/x.keep"],
    ),
    (
        "upload",
        ["--move-after-transfer=ARCHIVE", *KEEP],
        ["tree", "tree/a", "tree/b", "tree/b/c", "tree/k", "tree/k/x.keep"],
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "direction, flags, left", SOURCE_ACTIONS, ids=[f"{d}:{' '.join(f)}" for d, f, _ in SOURCE_ACTIONS]
)
def test_sources_removed_or_moved_after_transfer(fasp_server_module, tmp_path, direction, flags, left):
    """Transferred source files go (or move to the archive, on the source's host); emptied directories
    go only when asked; an excluded file stays, and so does its directory."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    tree = ends.src / "tree"
    files = {"a/one.bin": 1000, "b/c/two.bin": 2000, "three.bin": 3000}
    copies = tmp_path / "copies"
    for rel, size in files.items():
        shutil.copy(random_file(tree / rel, size), random_file(copies / rel, 0))
    random_file(tree / "k" / "x.keep", 10)
    archive = ends.src.parent / "archive"
    flags = [f.replace("ARCHIVE", ends.client_path(archive)) for f in flags]
    ok(server, *flags, *ends.args("tree"))
    for rel in files:
        assert_same_file(copies / rel, ends.dst / "tree" / rel)
        if any(f.startswith("--move-after-transfer") for f in flags):
            assert_same_file(copies / rel, archive / "tree" / rel)
    assert listing(ends.src) == left


@pytest.mark.timeout(90)
def test_server_side_effects_under_openssh(openssh_server, tmp_path):
    """The same effects when the server half runs under a stock sshd (the client starts it): a download
    removes the server's transferred sources and prunes what it emptied; an upload keeps a dated copy of
    the server file it overwrites."""
    server = openssh_server
    key = ["-i", str(server.identity)]
    down = Ends(server, tmp_path / "down", "download")
    files = [random_file(down.src / "tree" / rel, size) for rel, size in (("a/one.bin", 1000), ("b/two.bin", 2000))]
    copies = [shutil.copy(f, tmp_path / f.name) for f in files]
    random_file(down.src / "tree" / "b" / "x.keep", 10)
    ok(server, *key, "--remove-after-transfer", "--remove-empty-directories", "-E", "*.keep", *down.args("tree"))
    for f, copy in zip(files, copies):
        assert_same_file(Path(copy), down.dst / f.relative_to(down.src))
    assert listing(down.src) == ["tree", "tree/b", "tree/b/x.keep"]

    up = Ends(server, tmp_path / "up", "upload")
    src = random_file(up.src / "sb.txt", 5000)
    (up.dst / "sb.txt").write_bytes(b"before")
    ok(server, *key, "--save-before-overwrite", *up.args("sb.txt"))
    assert_same_file(src, up.dst / "sb.txt")
    [saved] = [p for p in up.dst.iterdir() if p.name != "sb.txt"]
    assert saved.name.startswith("sb.") and saved.name.endswith(".1.txt") and saved.read_bytes() == b"before"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_two_nodes_remove_only_whole_files(fasp_server_module, tmp_path, direction):
    """-C 1:2 and 2:2 with --remove-after-transfer: each small file goes once it arrived; a file above
    --multi-session-threshold travels in two ranges, so neither node may remove it (one did, and the
    other node then found no source: the file was lost). The destination is complete either way."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    tree = ends.src / "split"
    small = {f"s{i}.bin": random_file(tree / f"s{i}.bin", 5000 + i).read_bytes() for i in range(4)}
    big = random_file(tree / "big.bin", 8 << 20)
    digest = sha256(big)
    procs = [
        subprocess.Popen(
            [
                *ENGINE,
                *fasp_args(
                    server,
                    f"-C{node}:2",
                    "--multi-session-threshold=1048576",
                    "--remove-after-transfer",
                    *ends.args("split"),
                ),
            ],
            env=server.env(),
            stderr=subprocess.PIPE,
        )
        for node in (1, 2)
    ]
    try:
        codes = [p.wait(60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        errors = [p.communicate()[1].decode() for p in procs]
    assert codes == [0, 0], errors
    assert listing(tree) == ["big.bin"] and sha256(big) == digest
    assert_same_file(big, ends.dst / "split" / "big.bin", digest)
    for name, data in small.items():
        assert (ends.dst / "split" / name).read_bytes() == data
