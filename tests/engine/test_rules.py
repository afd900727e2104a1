"""Pure rules: overwrite/resume decisions, prefix digests, destination naming, source walking, pieces."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

from fasp.files import resume
from fasp.files.digest import prefix_digest, reader
from fasp.files.docroot import Unconfined, handle
from fasp.files.jobs import FileJob, Problem, Rules, data_extents, share, top_name, walk
from fasp.files.naming import destination
from fasp.files.resume import Existing, Plan, after_verify, plan
from fasp.session.receiving import clip, plan_pieces
from faspmanager.codes import EngineError, ErrorCode


def _plan(**kw):
    base = dict(size=1000, mtime=50.0, overwrite="diff", resume=0, final=None, partial=None, watermark=None)
    return plan(**{**base, **kw})


def test_overwrite_policies():
    same = Existing(1000, 50.0)
    assert _plan(final=same, partial=same).action == "send"  # -k 0: diff means overwrite
    assert _plan(final=same, partial=same, resume=1) == Plan("skip", reason="destination has the same size")
    assert _plan(final=same, partial=same, resume=3) == Plan("verify", 1000)
    assert _plan(final=same, partial=same, overwrite="never").action == "skip"
    assert _plan(final=same, partial=same, overwrite="always", resume=1) == Plan("send", 0)
    newer = Existing(1000, 99.0)
    assert _plan(final=newer, partial=newer, overwrite="older").action == "skip"
    older = Existing(10, 1.0)
    assert _plan(final=older, partial=None, overwrite="older") == Plan("send", 0)


def test_resume_rules():
    half = Existing(400, 1.0)
    assert _plan(final=half, partial=half, resume=0) == Plan("send", 0)
    assert _plan(final=half, partial=half, resume=1) == Plan("send", 400, "resumed")
    assert _plan(final=half, partial=half, resume=2) == Plan("verify", 400)
    assert _plan(final=half, partial=half, resume=1, watermark=256) == Plan("send", 256, "resumed")
    assert _plan(final=half, partial=half, resume=2, watermark=0) == Plan("send", 0)
    for k in (1, 2, 3):  # an envelope sealed by an earlier session: under another key, whatever its sidecar says
        assert _plan(final=half, partial=half, resume=k, watermark=400, sealed=True) == Plan("send", 0)
    suffixed = Existing(300, 1.0)
    assert _plan(final=None, partial=suffixed, resume=1) == Plan("send", 300, "resumed")
    too_big = Existing(5000, 1.0)
    assert _plan(final=too_big, partial=too_big, resume=2).action == "send"
    assert after_verify(Plan("verify", 400), 1000, ok=True) == Plan("send", 400, "resumed")
    assert after_verify(Plan("verify", 400), 1000, ok=False) == Plan("send", 0)
    assert after_verify(Plan("verify", 1000), 1000, ok=True).action == "skip"


def test_watermark_sidecar(tmp_path):
    files, partial, ident = Unconfined(), str(tmp_path / "f.bin"), (1, 2)
    assert resume.read_watermark(files, partial, ident, 10, 5.0) is None
    mark = resume.Watermark(files, partial, ident, 10, 5.0)
    mark.mark(700_000_000_000)
    mark.mark(7)  # each record overwrites the last in place: a longer one leaves nothing behind
    mark.close()
    assert resume.read_watermark(files, partial, ident, 10, 5.0) == 7
    assert resume.read_watermark(files, partial, ident, 11, 5.0) == 0  # another source: start over
    assert resume.read_watermark(files, partial, (1, 3), 10, 5.0) == 0  # another file (inode): not ours
    sidecar = tmp_path / ".f.bin.fasp-resume"
    sidecar.write_text(sidecar.read_text().replace('"have": 7', '"have": 3'))  # a planted watermark
    assert resume.read_watermark(files, partial, ident, 10, 5.0) == 0
    resume.clear_watermark(files, partial)
    assert resume.read_watermark(files, partial, ident, 10, 5.0) is None


@pytest.mark.parametrize("sparse", [False, True])
def test_prefix_digest_sees_a_changed_byte(tmp_path, sparse):
    data = bytearray(os.urandom(5 << 20))
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(data)
    data[-1] ^= 1  # the last byte before the prefix end: sampled by both forms
    b.write_bytes(data)
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    try:
        n = len(data)
        assert prefix_digest(reader(fa), n - 1, sparse) == prefix_digest(reader(fb), n - 1, sparse)
        assert prefix_digest(reader(fa), n, sparse) != prefix_digest(reader(fb), n, sparse)
    finally:
        os.close(fa)
        os.close(fb)


class _Looks(Unconfined):
    """The real handle, counting the directory looks and makes that naming costs."""

    def __init__(self) -> None:
        super().__init__()
        self.looks = 0

    def isdir(self, path: str) -> bool:
        self.looks += 1
        return super().isdir(path)

    def makedirs(self, path: str) -> None:
        self.looks += 1
        super().makedirs(path)


def test_a_session_looks_at_each_destination_directory_once(tmp_path):
    """10,000 small files into one directory looked it up and made it 20,000 times (a tenth of the receiving
    engine's time): with the session's ``known`` set, the root and each parent cost one look or make."""
    files, known = _Looks(), set()
    for i in range(50):
        path = destination(str(tmp_path / "d"), f"top/sub/f{i}", False, files=files, create_dirs=True, known=known)
        assert path == str(tmp_path / "d" / "top" / "sub" / f"f{i}")
    assert (tmp_path / "d" / "top" / "sub").is_dir()
    assert files.looks == 3  # the root (not there), its making, the parent's making


def test_a_known_directory_replaced_by_a_link_out_still_confines(tmp_path):
    """Naming trusts what the session found, but every file is opened through the docroot handle: a directory
    swapped for a link out of the docroot after naming saw it refuses the file (41), never writes outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    files, known = handle(str(root)), set()
    destination("d", "top/sub/a", False, files=files, create_dirs=False, known=known)
    (root / "d" / "top" / "sub").rmdir()
    (root / "d" / "top" / "sub").symlink_to(outside)
    path = destination("d", "top/sub/b", False, files=files, create_dirs=False, known=known)
    with pytest.raises(EngineError) as info:
        os.close(files.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    assert info.value.code == 41
    assert not any(outside.iterdir())


def test_destination_naming(tmp_path):
    files = Unconfined()
    (tmp_path / "dir").mkdir()
    assert destination(str(tmp_path / "dir"), "f.txt", True, files=files, create_dirs=False) == str(
        tmp_path / "dir" / "f.txt"
    )
    assert destination(str(tmp_path / "new.txt"), "f.txt", True, files=files, create_dirs=False) == str(
        tmp_path / "new.txt"
    )
    assert destination(str(tmp_path / "dir"), "top/a/b.txt", False, files=files, create_dirs=False) == str(
        tmp_path / "dir" / "top" / "a" / "b.txt"
    )
    with pytest.raises(EngineError) as info:
        destination(str(tmp_path / "missing"), "x", False, files=files, create_dirs=False)
    assert info.value.code == 4
    assert destination(str(tmp_path / "made"), "x", False, files=files, create_dirs=True) == str(
        tmp_path / "made" / "x"
    )
    with pytest.raises(EngineError) as info:
        destination(str(tmp_path / "dir"), "../escape", False, files=files, create_dirs=False)
    assert info.value.code == 41


def test_walk_names_filters_and_problems(tmp_path):
    root = tmp_path / "src"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "keep.txt").write_text("k")
    (root / "drop.tmp").write_text("d")
    os.mkfifo(root / "pipe")
    (root / "link").symlink_to(root / "a")
    items = list(walk(0, str(root), "src", files=Unconfined(), lone=False, rules=Rules(filters=("- *.tmp",))))
    files = sorted(i.rel for i in items if isinstance(i, FileJob) and not i.is_dir)
    assert files == ["src/a/b/keep.txt", "src/link/b/keep.txt"]
    problems = {os.path.basename(p.path): p for p in items if isinstance(p, Problem)}
    assert problems["drop.tmp"].skip and problems["pipe"].code == 21 and not problems["pipe"].skip
    skipping = list(
        walk(0, str(root), "src", files=Unconfined(), lone=False, rules=Rules(symlinks="skip", skip_special_files=True))
    )
    assert all(p.skip for p in skipping if isinstance(p, Problem))
    once = list(walk(0, str(root), "src", files=Unconfined(), lone=False, rules=Rules(skip_dir_dupes=True)))
    assert len([i for i in once if isinstance(i, FileJob) and i.rel.endswith("keep.txt")]) == 1
    (root / "a" / "b" / "up").symlink_to(root)
    looped = list(walk(0, str(root), "src", files=Unconfined(), lone=False, rules=Rules()))
    assert any(isinstance(p, Problem) and p.code == 63 for p in looped)
    missing = list(walk(3, str(tmp_path / "nope"), "nope", files=Unconfined(), lone=True, rules=Rules()))
    assert isinstance(missing[0], Problem) and missing[0].code == 4 and missing[0].arg == 3
    assert top_name("/x/y/z.txt", "/x", None, Unconfined()) == "y/z.txt"
    assert top_name("/x/y/", None, None, Unconfined()) == "y"
    assert top_name("/x/y", None, "renamed/here", Unconfined()) == "renamed/here"
    docroot = handle(str(tmp_path))  # a docroot reads /base and base alike; the base itself leaves nothing
    for source, base in (("/base/x", "base"), ("base/x/", "/base"), ("./base/x", "base/")):
        assert top_name(source, base, None, docroot) == "x", (source, base)
    assert top_name("/base", "base", None, docroot) == ""
    with pytest.raises(EngineError) as info:
        top_name("/based/x", "/base", None, docroot)
    assert info.value.code == 41


def test_a_source_with_no_name_of_its_own_is_dest_itself(tmp_path):
    """``/``, ``.``, an empty path (a server's docroot) name no entry: their contents are named below DEST directly,
    never by the real directory's name (``root``, the docroot's or the working directory's basename, before)."""
    for spelled in ("/", ".", "", "./", "//", "a/.."):
        assert top_name(spelled, None, None, Unconfined()) == "", spelled
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.txt").write_text("f")
    (root / "x.tmp").write_text("x")
    rules = Rules(filters=("- /sub/f.txt", "- x.tmp"))
    items = list(walk(0, str(root), "", files=Unconfined(), lone=False, rules=rules))
    assert [i.rel for i in items if isinstance(i, FileJob)] == ["", "sub"]  # anchored at DEST, no leading "/"
    assert sorted(p.rel for p in items if isinstance(p, Problem)) == ["sub/f.txt", "x.tmp"]


def test_data_extents_of_a_sparse_file(tmp_path):
    path = tmp_path / "sparse"
    with open(path, "wb") as handle:
        handle.truncate(64 << 20)
        handle.seek(32 << 20)
        handle.write(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = data_extents(fd, 64 << 20)
    finally:
        os.close(fd)
    assert extents is not None and len(extents) == 1
    lo, hi = extents[0]
    assert lo <= 32 << 20 < (32 << 20) + 10 <= hi < 64 << 20


@settings(deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10**7), st.integers(1, 10**6)), max_size=5),
    st.integers(4096, 10**6),
    st.integers(0, 2 * 10**7),
    st.integers(0, 2 * 10**7),
)
def test_pieces_cover_exactly_the_wanted_data(raw, piece, start, end):
    extents, at = [], 0
    for gap, length in raw:
        extents.append([at + gap, at + gap + length])
        at += gap + length
    pieces = list(plan_pieces(clip(extents, start, end), piece))
    covered = sum(hi - lo for lo, hi in pieces)
    wanted = sum(max(0, min(hi, end) - max(lo, start)) for lo, hi in extents)
    assert covered == wanted
    assert all(0 < hi - lo <= piece and start <= lo and hi <= end for lo, hi in pieces)
    assert pieces == sorted(pieces)


@given(st.lists(st.integers(0, 5000), max_size=20), st.integers(1, 4), st.sampled_from([0, 1000]))
def test_nodes_share_every_byte_exactly_once(sizes, nodes, split_above):
    def jobs():
        return [FileJob(0, f"/f{i}", f"f{i}", size=size) for i, size in enumerate(sizes)]

    covered: dict[str, list[tuple[int, int]]] = {}
    for node in range(1, nodes + 1):
        for job in share(jobs(), node, nodes, split_above):
            span = (job.start or 0, job.size if job.end is None else job.end)
            covered.setdefault(job.rel, []).append(span)
    for i, size in enumerate(sizes):
        spans = sorted(covered.get(f"f{i}", []))
        assert spans and spans[0][0] == 0 and spans[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # no gap, no overlap


@given(st.lists(st.text(min_size=1, max_size=8), max_size=20, unique=True), st.integers(2, 4))
def test_an_entry_s_problem_is_told_by_the_node_whose_share_it_is(names, nodes):
    """Each node stats every entry of a directory it walks; one another node's --remove-after-transfer had taken
    since the listing failed with 43 on every other node (a -C download ended 27 for nothing). An entry's problem
    now goes to the node its name picks, as its file would; a source argument's own problem to every node."""
    entries = [Problem(0, f"/d/{n}", ErrorCode.NO_SUCH_FILE, f"/d/{n}: No such file", rel=f"d/{n}") for n in names]
    source = Problem(0, "/gone", ErrorCode.NO_SUCH_FILE, "/gone: No such file")
    told: dict[str, list[int]] = {}
    for node in range(1, nodes + 1):
        for item in share([*entries, source, *(FileJob(0, f"/d/{n}", f"d/{n}", size=1) for n in names)], node, nodes):
            told.setdefault(item.desc if isinstance(item, Problem) else item.rel, []).append(node)
    assert told[source.desc] == list(range(1, nodes + 1))
    for n in names:
        assert len(told[f"/d/{n}: No such file"]) == 1
        assert told[f"/d/{n}: No such file"] == told[f"d/{n}"]  # the node that would have sent the file


# IBM's own examples of the glob forms ("Using filters to include and exclude files"): pattern, path, directory?
FILTER_MATCHES = [
    ("abc/def/xyz", "abc/def/xyz", False),
    ("abc\\?", "abc?", False),
    ("abc*f", "abc.f", False),
    ("abc??", "abc.z", False),
    ("[abc]def", "cdef", False),
    ("[^abc]def", ".def", False),
    ("[[:lower:]]def", "ydef", False),
    ("a/**/f", "a/f", False),
    ("a/**/f", "a/.z/f", False),
    ("a/**/f", "a/d/e/f", False),
    ("abc*", "abc", True),
    ("abc/**", "abc/wxy/tuv/file", False),
    ("sub/", "top/sub", True),
    ("/top/sub", "top/sub", True),
    ("cache", "top/x/cache", True),  # a bare name: directories too, here (IBM: files only)
]
FILTER_MISSES = [
    ("abc/def/xyz", "abc/def", False),
    ("abc\\?", "abcD", False),
    ("abc*f", "abc/f", False),
    ("abc??", "abc/d", False),
    ("[^abc]def", "x/bdef", False),
    ("/[^abc]def", ".def", False),
    ("[[:lower:]]def", "Adef", False),
    ("/a/**/f", "za/d/f", False),
    ("abc/**", "abc", True),
    ("sub/", "top/sub", False),
    ("/sub", "top/sub", True),
    ("/top/*", "top/.hidden", False),
]


@pytest.mark.parametrize(("pattern", "rel", "is_dir"), FILTER_MATCHES)
def test_filter_pattern_matches(pattern, rel, is_dir):
    assert Rules(filters=("- " + pattern,)).matched(rel, is_dir) == pattern


@pytest.mark.parametrize(("pattern", "rel", "is_dir"), FILTER_MISSES)
def test_filter_pattern_misses(pattern, rel, is_dir):
    assert Rules(filters=("- " + pattern,)).matched(rel, is_dir) is None
