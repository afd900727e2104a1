"""IBM ascp's destination rule, both directions, through fasp-server and a stock sshd.

The destination is a directory (created by ``-d`` when missing; a file list implies ``-d``) unless ``-d`` is
absent, exactly one source file is given on the command line and the target does not exist (or is a file, which
it then replaces): only then is it the file's new name. A trailing ``/`` always means a directory.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from tests.engine.helpers import run_ascp
from tests.support.files import assert_same_file, random_file

_case_ids = itertools.count()


class Far:
    """A transfer of named source files to a destination spelled relative to a fresh directory on the
    receiving side, in one direction, against one server (fasp-server: password; sshd: key)."""

    def __init__(self, server, tmp_path: Path, direction: str) -> None:
        self.server, self.tmp, self.direction = server, tmp_path, direction
        sshd = hasattr(server, "identity")
        self.login = f"{'root' if sshd else server.user}@{server.host}"
        self.args = ["-q", "-P", str(server.port), *(["-i", str(server.identity)] if sshd else [])]

    def run(self, names: list[str], dest: str, *flags: str, via_list: bool = False, make=None):
        """Send ``names`` (files, or directories holding one file ``f.bin``) to ``dest``.
        ``make(receiving_dir)`` prepares the receiving side. Returns (process, receiving dir, {name: source})."""
        case = f"{self.direction}-{next(_case_ids)}"
        upload = self.direction == "upload"
        send_dir = (self.tmp / case) if upload else (self.server.docroot / "src" / case)
        recv_dir = (self.server.docroot / case) if upload else (self.tmp / case)
        recv_dir.mkdir(parents=True)
        if make:
            make(recv_dir)
        sources = {}
        for name in names:
            path = (
                random_file(send_dir / name / "f.bin", 1000)
                if name.endswith("dir")
                else random_file(send_dir / name, 20_000 + len(sources))
            )
            sources[name] = path
        spelled = [str(send_dir / n) if upload else f"/src/{case}/{n}" for n in names]
        target = f"{self.login}:/{case}/{dest}" if upload else f"{recv_dir}/{dest}"
        if via_list:
            listing = self.tmp / f"{case}.list"
            listing.write_text("".join(s + "\n" for s in spelled))
            spelled = [f"--file-list={listing}"]
            if not upload:
                spelled = [f"--host={self.server.host}", f"--user={self.login.split('@')[0]}", "--mode=recv", *spelled]
        elif not upload:
            spelled = [f"{self.login}:{s}" for s in spelled]
        proc = run_ascp([*self.args, *flags, *spelled, target], self.server.env())
        return proc, recv_dir, sources


def _ok(proc):
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]


def _failed(proc, *codes):
    assert proc.returncode in codes, (proc.returncode, proc.stderr.decode(errors="replace")[-2000:])


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*"))


def _check_rules(far: Far) -> None:
    # 1. no -d, one file on the command line, target missing: the target is the file's new name
    proc, got, src = far.run(["small.bin"], "renamed.bin")
    _ok(proc)
    assert _tree(got) == ["renamed.bin"]
    assert_same_file(src["small.bin"], got / "renamed.bin")

    # 2. the same with -d: the destination is a directory, created
    for dest in ("newdir", "newdir/"):
        proc, got, src = far.run(["small.bin"], dest, "-d")
        _ok(proc)
        assert _tree(got) == ["newdir/", "newdir/small.bin"]
        assert_same_file(src["small.bin"], got / "newdir" / "small.bin")

    # 3. an existing directory is a directory, -d or not
    for flags in ((), ("-d",)):
        proc, got, src = far.run(["small.bin"], "there", *flags, make=lambda d: (d / "there").mkdir())
        _ok(proc)
        assert _tree(got) == ["there/", "there/small.bin"]
        assert_same_file(src["small.bin"], got / "there" / "small.bin")

    # 4. no -d, the target an existing file: it is replaced (the target is the file name)
    proc, got, src = far.run(["small.bin"], "old.bin", make=lambda d: (d / "old.bin").write_bytes(b"old"))
    _ok(proc)
    assert _tree(got) == ["old.bin"]
    assert_same_file(src["small.bin"], got / "old.bin")
    # ... but with -d it must be a directory: nothing is written over it
    proc, got, _ = far.run(["small.bin"], "old.bin", "-d", make=lambda d: (d / "old.bin").write_bytes(b"old"))
    _failed(proc, 6)
    assert (got / "old.bin").read_bytes() == b"old"

    # 5. a trailing slash names a directory: missing without -d is an error, not a file named so
    proc, got, _ = far.run(["small.bin"], "missing/")
    _failed(proc, 4)
    assert _tree(got) == []

    # 6. two files: a directory; missing without -d is an error, -d creates it
    proc, got, _ = far.run(["a.bin", "b.bin"], "two")
    _failed(proc, 4)
    assert _tree(got) == []
    proc, got, src = far.run(["a.bin", "b.bin"], "two", "-d")
    _ok(proc)
    assert _tree(got) == ["two/", "two/a.bin", "two/b.bin"]
    for name in ("a.bin", "b.bin"):
        assert_same_file(src[name], got / "two" / name)

    # 7. one file from --file-list is not "on the command line": the destination is a directory, and a list
    # implies -d (ascp --help: "Create target directory, implied for file/file-pair lists")
    for flags in ((), ("-d",)):
        proc, got, src = far.run(["listed.bin"], "fromlist", *flags, via_list=True)
        _ok(proc)
        assert _tree(got) == ["fromlist/", "fromlist/listed.bin"]
        assert_same_file(src["listed.bin"], got / "fromlist" / "listed.bin")

    # 8. one directory is not one file: it goes inside the destination, which -d creates
    proc, got, src = far.run(["adir"], "dirdest", "-d")
    _ok(proc)
    assert _tree(got) == ["dirdest/", "dirdest/adir/", "dirdest/adir/f.bin"]
    assert_same_file(src["adir"], got / "dirdest" / "adir" / "f.bin")

    # 9. a file where the destination needs a directory: 6 "not a directory", -d or not (it was 4 "does not exist
    # (use -d)" without -d, which -d cannot help)
    for flags in ((), ("-d",)):
        proc, got, _ = far.run(["small.bin"], "afile/x", *flags, make=lambda d: (d / "afile").write_bytes(b"old"))
        _failed(proc, 6)
        assert b"not a directory" in proc.stderr
        assert (got / "afile").read_bytes() == b"old"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_rules_through_fasp_server(fasp_server_module, tmp_path, direction):
    _check_rules(Far(fasp_server_module, tmp_path, direction))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_rules_through_stock_sshd(openssh_server, tmp_path, direction):
    _check_rules(Far(openssh_server, tmp_path, direction))


def _check_docroot_source(far: Far) -> None:
    """The user's docroot itself as the source: ``/``, ``.`` and an empty path spell the same directory, which has
    no name of its own the user could see, so its contents land in DEST itself, alike for the three (they landed as
    ``root/`` and under the basename of the server's real directory, which also depended on the engine's cwd). An
    upload of ``.`` (the local working directory) follows the same rule."""
    server = far.server
    made = {
        "top.bin": random_file(server.docroot / "top.bin", 3000),
        "nd/f.bin": random_file(server.docroot / "nd" / "f.bin", 1500),
    }
    for n, spelled in enumerate(("/", ".", "")):
        got = far.tmp / f"docroot-{n}"
        got.mkdir()
        _ok(run_ascp([*far.args, f"{far.login}:{spelled}", str(got)], server.env()))
        assert _tree(got) == ["nd/", "nd/f.bin", "top.bin"], spelled
        for name, source in made.items():
            assert_same_file(source, got / name)
    # --delete-before-transfer prunes DEST itself to the docroot's names: what both have stays as it is
    got = far.tmp / "docroot-pruned"
    (got / "nd").mkdir(parents=True)
    shutil.copy2(made["top.bin"], got / "top.bin")
    kept = (got / "top.bin").stat().st_ino
    random_file(got / "stale.bin", 10)
    random_file(got / "nd" / "stale.bin", 10)
    _ok(run_ascp([*far.args, "--delete-before-transfer", f"{far.login}:/", str(got)], server.env()))
    assert _tree(got) == ["nd/", "nd/f.bin", "top.bin"]
    assert (got / "top.bin").stat().st_ino == kept
    assert_same_file(made["nd/f.bin"], got / "nd" / "f.bin")
    here = far.tmp / "here"
    uploaded = random_file(here / "sub" / "up.bin", 2000)
    _ok(run_ascp([*far.args, "-d", ".", f"{far.login}:/up"], server.env(), cwd=here))
    assert _tree(server.docroot / "up") == ["sub/", "sub/up.bin"]
    assert_same_file(uploaded, server.docroot / "up" / "sub" / "up.bin")


@pytest.mark.timeout(120)
def test_docroot_source_through_fasp_server(fasp_server, tmp_path):
    _check_docroot_source(Far(fasp_server, tmp_path, "download"))


@pytest.mark.timeout(120)
def test_docroot_source_through_stock_sshd(openssh_server, tmp_path):
    _check_docroot_source(Far(openssh_server, tmp_path, "download"))
