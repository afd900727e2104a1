"""Docroot confinement: nothing a client can spell resolves outside the docroot."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fasp.files.docroot import Docroot
from faspmanager.codes import EngineError, ErrorCode


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A docroot with dirs, files and links in and out, next to a secret outside it."""
    base = tmp_path_factory.mktemp("confine")
    (base / "outside").mkdir()
    (base / "outside" / "secret").write_text("secret")
    root = base / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "file").write_text("x")
    os.symlink(base / "outside", root / "out_abs")  # absolute link out
    os.symlink("../outside", root / "out_rel")  # relative link out
    os.symlink("a/b", root / "in_link")  # link that stays in
    os.symlink("/", root / "a" / "to_fs_root")
    os.symlink(base / "outside" / "nothing", root / "dangling_out")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink(root, base / "root_alias")  # docroot given through a link
    return root


@pytest.fixture(params=[True, False], ids=["openat2", "walk"])
def files(tree, request):
    handle = Docroot(str(tree), use_openat2=request.param)
    yield handle
    handle.close()


def landing(files: Docroot, path: str) -> str:
    """The real path of what ``path`` opens through the handle (links followed, as a read would)."""
    fd = files.open(path, os.O_PATH)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def test_root_spellings_mean_the_docroot(tree, files):
    for path in ("", "/", "//", ".", "/./", "a/.."):
        assert landing(files, path) == str(tree)


def test_absolute_client_paths_are_relative_to_the_docroot(tree, files):
    assert landing(files, "/a/file") == str(tree / "a" / "file")
    with pytest.raises(FileNotFoundError):
        landing(files, "//etc/passwd")  # the docroot's etc/passwd, which is not there


def test_new_directories_land_through_links_that_stay_inside(tree, files):
    files.makedirs("in_link/new/deeper")
    assert (tree / "a" / "b" / "new" / "deeper").is_dir()


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "../outside/secret",
        "a/../../outside",
        "/..",
        "a/b/../../../x",
        "out_abs",
        "out_abs/secret",
        "out_rel/secret",
        "a/to_fs_root/etc",
        "dangling_out",
        "in_link/../../../outside",
    ],
)
def test_escapes_are_refused_with_code_41(files, path):
    with pytest.raises(EngineError) as info:
        landing(files, path)
    assert info.value.code == ErrorCode.BAD_PATH


@pytest.mark.parametrize("path", ["a/file\0.txt", "a/\ud800"])
def test_unencodable_names_are_refused(files, path):
    with pytest.raises(EngineError) as info:
        landing(files, path)
    assert info.value.code == ErrorCode.BAD_PATH


def test_link_loop_is_refused_with_code_63(files):
    for path in ("loop1", "loop2/x"):
        with pytest.raises(EngineError) as info:
            landing(files, path)
        assert info.value.code == ErrorCode.LINK_LOOP


def test_docroot_given_through_a_link(tree):
    files = Docroot(str(tree.parent / "root_alias"))
    try:
        assert landing(files, "a/file") == str(tree / "a" / "file")
        with pytest.raises(EngineError):
            landing(files, "../outside")
    finally:
        files.close()


@pytest.mark.parametrize("use_openat2", [True, False])
def test_the_handle_opens_inside_and_refuses_outside(tree, use_openat2):
    files = Docroot(str(tree), use_openat2=use_openat2)
    try:
        fd = files.open("/in_link/../file", os.O_RDONLY)
        assert os.read(fd, 10) == b"x"
        os.close(fd)
        for path, code in (
            ("out_abs/secret", ErrorCode.BAD_PATH),
            ("out_rel/secret", ErrorCode.BAD_PATH),
            ("..", ErrorCode.BAD_PATH),
            ("loop1", ErrorCode.LINK_LOOP),
        ):
            with pytest.raises(EngineError) as info:
                files.open(path, os.O_RDONLY)
            assert info.value.code == code
            assert str(tree.parent) not in info.value.description  # the server's real path is never named
    finally:
        files.close()


COMPONENTS = st.sampled_from(
    [
        "..",
        ".",
        "",
        "a",
        "b",
        "file",
        "new",
        "out_abs",
        "out_rel",
        "in_link",
        "to_fs_root",
        "dangling_out",
        "loop1",
        "outside",
        "secret",
        "root",
        "/",
        "etc",
        "\0",
        "...",
        "a\\..",
        "~",
    ]
)


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(COMPONENTS, max_size=8), lead=st.sampled_from(["", "/", "//", "./", "../"]))
def test_no_spelled_path_escapes(tree, parts, lead):
    _check_confined(tree, lead + "/".join(parts))


@settings(max_examples=300, deadline=None)
@given(
    path=st.text(alphabet=st.sampled_from("./ab\\\0~-"), max_size=24)
    | st.text(max_size=24)
    | st.text(alphabet=st.characters(categories=["Cs", "Cc", "Ll", "Po"]), max_size=24)
)  # lone surrogates too
def test_no_arbitrary_text_escapes(tree, path):
    _check_confined(tree, path)


LINK_TARGET = st.lists(
    st.sampled_from(["..", ".", "a", "b", "l1", "l2", "outside", "root", "secret", ""]), max_size=5
).map("/".join)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    links=st.lists(
        st.tuples(st.sampled_from(["l1", "a/l2", "a/b/l3", "a/b/l1"]), st.booleans(), LINK_TARGET), max_size=3
    ),
    parts=st.lists(st.sampled_from(["..", ".", "a", "b", "l1", "l2", "l3", "new", "secret"]), max_size=7),
)
def test_random_links_never_lead_out(links, parts):
    """Links that hypothesis places and aims (relative, or absolute anywhere around the docroot)."""
    with tempfile.TemporaryDirectory() as base:
        root = Path(base) / "root"
        (root / "a" / "b").mkdir(parents=True)
        (Path(base) / "outside").mkdir()
        for at, absolute, target in links:
            if not os.path.lexists(root / at):
                os.symlink(f"{base}/{target}" if absolute else target or ".", root / at)
        _check_confined(root, "/".join(parts))


def _check_confined(tree: Path, path: str) -> None:
    """Through either resolver: a typed refusal, nothing there, or a landing under the real docroot."""
    for use_openat2 in (True, False):
        files = Docroot(str(tree), use_openat2=use_openat2)
        try:
            result = landing(files, path)
        except EngineError as exc:
            assert exc.code in (ErrorCode.BAD_PATH, ErrorCode.LINK_LOOP)
            continue
        except (FileNotFoundError, NotADirectoryError):
            continue
        finally:
            files.close()
        real_root = Path(os.path.realpath(tree))
        assert Path(result) == real_root or Path(result).is_relative_to(real_root), (path, result)


def test_probing_for_openat2_leaves_no_descriptor_behind():
    """The import-time probe closes what it opened (an engine's children would inherit a descriptor of /)."""
    import subprocess
    import sys

    probe = (
        "import os; before = set(os.listdir('/proc/self/fd')); import fasp.files.docroot; "
        "print(sorted(set(os.listdir('/proc/self/fd')) - before))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
