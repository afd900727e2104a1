"""Docroot confinement: nothing a client can spell resolves outside the docroot."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fasp.docroot import Docroot, resolve
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
    os.symlink(base / "outside", root / "out_abs")          # absolute link out
    os.symlink("../outside", root / "out_rel")               # relative link out
    os.symlink("a/b", root / "in_link")                      # link that stays in
    os.symlink("/", root / "a" / "to_fs_root")
    os.symlink(base / "outside" / "nothing", root / "dangling_out")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink(root, base / "root_alias")                    # docroot given through a link
    return root


def test_root_spellings_mean_the_docroot(tree):
    for path in ("", "/", "//", ".", "/./", "a/.."):
        assert resolve(str(tree), path) == str(tree)


def test_absolute_client_paths_are_relative_to_the_docroot(tree):
    assert resolve(str(tree), "/a/file") == str(tree / "a" / "file")
    assert resolve(str(tree), "//etc/passwd") == str(tree / "etc" / "passwd")


def test_missing_destination_resolves_through_its_parent(tree):
    assert resolve(str(tree), "a/b/new/deeper.bin") == str(tree / "a" / "b" / "new" / "deeper.bin")
    assert resolve(str(tree), "in_link/new") == str(tree / "a" / "b" / "new")


@pytest.mark.parametrize("path", ["..", "../outside/secret", "a/../../outside", "/..", "new/../../x",
                                  "out_abs", "out_abs/secret", "out_rel/secret", "a/to_fs_root/etc",
                                  "dangling_out", "in_link/../../../outside"])
def test_escapes_are_refused_with_code_41(tree, path):
    with pytest.raises(EngineError) as info:
        resolve(str(tree), path)
    assert info.value.code == ErrorCode.BAD_PATH


@pytest.mark.parametrize("path", ["a/file\0.txt", "a/\ud800"])
def test_unencodable_names_are_refused(tree, path):
    with pytest.raises(EngineError) as info:
        resolve(str(tree), path)
    assert info.value.code == ErrorCode.BAD_PATH


def test_link_loop_is_refused_with_code_63(tree):
    for path in ("loop1", "loop2/x"):
        with pytest.raises(EngineError) as info:
            resolve(str(tree), path)
        assert info.value.code == ErrorCode.LINK_LOOP


def test_docroot_given_through_a_link(tree):
    alias = tree.parent / "root_alias"
    assert resolve(str(alias), "a/file") == str(tree / "a" / "file")
    with pytest.raises(EngineError):
        resolve(str(alias), "../outside")


@pytest.mark.parametrize("use_openat2", [True, False])
def test_the_handle_opens_inside_and_refuses_outside(tree, use_openat2):
    files = Docroot(str(tree), use_openat2=use_openat2)
    try:
        fd = files.open("/in_link/../file", os.O_RDONLY)
        assert os.read(fd, 10) == b"x"
        os.close(fd)
        for path, code in (("out_abs/secret", ErrorCode.BAD_PATH), ("out_rel/secret", ErrorCode.BAD_PATH),
                           ("..", ErrorCode.BAD_PATH), ("loop1", ErrorCode.LINK_LOOP)):
            with pytest.raises(EngineError) as info:
                files.open(path, os.O_RDONLY)
            assert info.value.code == code
            assert str(tree.parent) not in info.value.description  # the server's real path is never named
    finally:
        files.close()


COMPONENTS = st.sampled_from(["..", ".", "", "a", "b", "file", "new", "out_abs", "out_rel", "in_link",
                              "to_fs_root", "dangling_out", "loop1", "outside", "secret", "root", "/",
                              "etc", "\0", "...", "a\\..", "~"])


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(COMPONENTS, max_size=8), lead=st.sampled_from(["", "/", "//", "./", "../"]))
def test_no_spelled_path_escapes(tree, parts, lead):
    _check_confined(tree, lead + "/".join(parts))


@settings(max_examples=300, deadline=None)
@given(path=st.text(alphabet=st.sampled_from("./ab\\\0~-"), max_size=24)
       | st.text(max_size=24)
       | st.text(alphabet=st.characters(categories=["Cs", "Cc", "Ll", "Po"]), max_size=24))  # lone surrogates too
def test_no_arbitrary_text_escapes(tree, path):
    _check_confined(tree, path)


LINK_TARGET = st.lists(st.sampled_from(["..", ".", "a", "b", "l1", "l2", "outside", "root", "secret", ""]),
                       max_size=5).map("/".join)


@settings(max_examples=200, deadline=None)
@given(links=st.lists(st.tuples(st.sampled_from(["l1", "a/l2", "a/b/l3", "a/b/l1"]), st.booleans(), LINK_TARGET),
                      max_size=3),
       parts=st.lists(st.sampled_from(["..", ".", "a", "b", "l1", "l2", "l3", "new", "secret"]), max_size=7))
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
    """Either a typed refusal, or an absolute real path under the real docroot."""
    try:
        result = resolve(str(tree), path)
    except EngineError as exc:
        assert exc.code in (ErrorCode.BAD_PATH, ErrorCode.LINK_LOOP)
        return
    assert os.path.isabs(result)
    assert Path(result) == tree or Path(result).is_relative_to(tree)
    assert os.path.realpath(result) == result  # nothing left to resolve: opening it cannot go elsewhere
