"""Issue 10: an authenticated fasp-server user must never reach outside their docroot.

Each test is the attack as the reviewer ran it: a stock ``fasp-ascp`` against a real fasp-server, or,
where the stock client cannot show the leak (the resume digest, a race inside one session), a
hand-built client speaking the control protocol over SSH (:class:`ControlClient`). Victims live next
to the docroot; every test checks they are byte-for-byte (and owner-for-owner) what they were.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from fasp.files import resume
from fasp.files.digest import prefix_digest, reader
from fasp.files.docroot import Docroot
from fasp.options.peer import PeerOptions
from fasp.session.messages import FileError, Message, Piece, Verified, Verify
from faspmanager.codes import ErrorCode
from tests.engine.helpers import MgmtListener, fasp_args, remote, run_ascp
from tests.support.control_client import ControlClient
from tests.support.files import assert_same_file, random_file
from tests.support.root import needs_root
from tests.support.servers import start_fasp_server

pytestmark = pytest.mark.slow

NO_OPENAT2_ENV = (
    "FASP_NO_OPENAT2"  # fasp.files.docroot.NO_OPENAT2_ENV (spelled out: these tests also run on older code)
)
SECRET = b"root:$6$very-secret-hash$:19000:0:99999:7:::\n" * 3


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def resolver(request, monkeypatch) -> str:
    """Each attack against both resolvers of the server's handle (the engine inherits the variable)."""
    if request.param == "walk":
        monkeypatch.setenv(NO_OPENAT2_ENV, "1")
    else:
        monkeypatch.delenv(NO_OPENAT2_ENV, raising=False)
    return request.param


@pytest.fixture
def outside(fasp_server) -> Path:
    """A directory next to the docroot holding a victim file (owned by root, as the test runs)."""
    place = fasp_server.docroot.parent / "elsewhere"
    place.mkdir()
    (place / "victim").write_bytes(SECRET)
    return place


def _untouched(outside: Path) -> None:
    victim = outside / "victim"
    assert (victim.stat().st_uid, victim.stat().st_gid) == (0, 0), "the file outside the docroot changed owner"
    assert victim.read_bytes() == SECRET, "the file outside the docroot was written"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"], "a file appeared outside the docroot"


def _link_upload(server, tmp_path: Path, target: str) -> object:
    """Step 1 of attacks 1 and 2: upload a link x.partial -> target with --symbolic-links=copy."""
    kit = tmp_path / "kit"
    kit.mkdir(exist_ok=True)
    (kit / "x.partial").symlink_to(target)
    return run_ascp(
        fasp_args(server, "--symbolic-links=copy", str(kit / "x.partial"), remote(server, "/")), server.env()
    )


def _escaping_targets(outside: Path) -> list[str]:
    return [str(outside / "victim"), "../elsewhere/victim"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("spelling", ["absolute", "relative"])
def test_attack1_partial_file_link_writes_outside(fasp_server, outside, tmp_path, spelling):
    server = fasp_server
    target = _escaping_targets(outside)[spelling == "relative"]
    linked = _link_upload(server, tmp_path, target)
    payload = random_file(tmp_path / "x", 200_000)
    result = run_ascp(
        fasp_args(server, "--partial-file-suffix=.partial", str(payload), remote(server, "/x")), server.env()
    )
    _untouched(outside)
    assert linked.returncode != 0 and b"leaves the docroot" in linked.stderr, linked.stderr
    assert str(server.docroot).encode() not in linked.stderr  # the server's real path is never named
    assert not os.path.lexists(server.docroot / "x.partial"), "the escaping link was created"
    assert result.returncode == 0, result.stderr
    assert_same_file(payload, server.docroot / "x")


@pytest.mark.timeout(120)
def test_attack1_planted_partial_link_is_never_followed(fasp_server, outside, tmp_path):
    """The link as an earlier server let it be uploaded: the partial file is opened O_NOFOLLOW."""
    server = fasp_server
    os.symlink(outside / "victim", server.docroot / "x.partial")
    payload = random_file(tmp_path / "x", 200_000)
    result = run_ascp(
        fasp_args(server, "--partial-file-suffix=.partial", str(payload), remote(server, "/x")), server.env()
    )
    _untouched(outside)
    assert result.returncode != 0  # that file fails alone (a link where our partial file goes)
    assert str(server.docroot) not in result.stderr.decode(errors="replace")  # the server's path is not named


@pytest.mark.timeout(120)
@pytest.mark.parametrize("planted", [False, True])
@needs_root("a payload of another owner (chown) and a root-owned victim")
def test_attack2_preserved_owner_changes_a_file_outside(fasp_server, outside, tmp_path, planted):
    server = fasp_server
    if planted:
        os.symlink(outside / "victim", server.docroot / "x.partial")
    else:
        _link_upload(server, tmp_path, str(outside / "victim"))
    payload = random_file(tmp_path / "x", 50_000)
    os.chown(payload, 12345, 23456)
    run_ascp(
        fasp_args(
            server,
            "--partial-file-suffix=.partial",
            "--preserve-file-owner-uid",
            "--preserve-file-owner-gid",
            str(payload),
            remote(server, "/x"),
        ),
        server.env(),
    )
    _untouched(outside)
    if not planted:  # nothing in the way: the upload itself keeps working, owner and bytes
        assert_same_file(payload, server.docroot / "x")
        assert (server.docroot / "x").stat().st_uid == 12345


def _sidecar(docroot: Path, name: str, size: int, mtime: int, have: int) -> None:
    """A resume sidecar as the attacker writes it (an uploaded file is just bytes)."""
    (docroot / f".{name}.fasp-resume").write_text(json.dumps({"size": size, "mtime": mtime, "have": have}))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("through", ["partial-link", "link", "file"])
def test_attack4_planted_sidecar_is_no_digest_oracle(fasp_server, outside, through):
    """A sidecar saying ``have: N`` beside a link (the partial file's name was never resolved) made the
    server send the digest of the first N bytes of any file it can read: byte by byte recovery. Now no
    digest of bytes the user did not write there through the engine: the link is not followed, an
    unauthenticated sidecar is ignored."""
    server, size, mtime, have = fasp_server, 4096, 1_700_000_000, 7
    opts, name = PeerOptions(resume=2, overwrite="diff"), "r"
    if through == "partial-link":
        opts, name = PeerOptions(resume=2, overwrite="diff", partial_suffix=".partial"), "r.partial"
        os.symlink(outside / "victim", server.docroot / name)
    elif through == "link":
        os.symlink(outside / "victim", server.docroot / name)
    else:  # a file in the docroot the engine did not write (another user's, an admin's...)
        (server.docroot / name).write_bytes(SECRET)
    _sidecar(server.docroot, name, size, mtime, have)

    async def attack() -> Message:
        async with ControlClient(server, "/", opts) as client:
            return await client.offer("r", size, mtime)

    answer = asyncio.run(attack())
    fd = os.open(outside / "victim", os.O_RDONLY)
    try:
        leaked = prefix_digest(reader(fd), have, False)
    finally:
        os.close(fd)
    assert not (isinstance(answer, Verify) and answer.digest == leaked), "the digest of a secret prefix leaked"
    assert not isinstance(answer, Verify), answer
    _untouched(outside)
    if through == "file":
        assert isinstance(answer, Piece) and answer.start == 0, answer  # a full transfer: the sidecar is not trusted
    else:  # a link where our partial file goes is refused (63: not followed), one to the name leaves (41)
        code = ErrorCode.LINK_LOOP if through == "partial-link" else ErrorCode.BAD_PATH
        assert isinstance(answer, FileError) and answer.code == code, answer
        assert str(server.docroot) not in answer.desc and str(outside) not in answer.desc


@pytest.mark.timeout(120)
def test_attack5_directory_swapped_for_a_link_between_check_and_open(fasp_server, outside):
    """The server resolved ``/d/f``, then waited for the client (a -k 2 check of the same-size file);
    meanwhile ``d`` became a link to outside. The open that follows must not go through it."""
    server, size, mtime = fasp_server, len(SECRET), 1_700_000_000
    (server.docroot / "d").mkdir()
    (server.docroot / "d" / "f").write_bytes(b"x" * size)
    (outside / "f").write_bytes(SECRET)

    async def attack() -> list[Message]:
        async with ControlClient(server, "/d", PeerOptions(resume=2, overwrite="diff")) as client:
            first = await client.offer("f", size, mtime)
            assert isinstance(first, Verify), first  # the server waits for our answer: the window
            (server.docroot / "d").rename(server.docroot / "d.old")
            os.symlink(outside, server.docroot / "d")
            await client.channel.send(Verified(fid=1, ok=False))
            return [first, await client.answer()]

    first, second = asyncio.run(attack())
    assert (outside / "f").read_bytes() == SECRET, "the file outside was opened for writing (truncated)"
    (outside / "f").unlink()
    _untouched(outside)
    assert isinstance(second, FileError) and second.code == ErrorCode.BAD_PATH, second
    assert str(server.docroot) not in second.desc
    assert (
        hashlib.sha256((server.docroot / "d.old" / "f").read_bytes()).digest() == hashlib.sha256(b"x" * size).digest()
    )


@pytest.mark.timeout(120)
def test_local_docroot_is_the_same_handle(fasp_server, outside, tmp_path):
    """--apply-local-docroot: the client's own paths go through a handle too; a link in the local
    docroot that leads out is neither read (upload) nor written through (download): 41, nothing outside."""
    server = fasp_server
    local = tmp_path / "local-root"
    local.mkdir()
    os.symlink(outside, local / "out")
    random_file(server.docroot / "x.bin", 3000)
    env = {**server.env(), "FASP_LOCAL_DOCROOT": str(local)}
    up = run_ascp(fasp_args(server, "--apply-local-docroot", "/out/victim", remote(server, "/stolen")), env)
    assert up.returncode == 41 and not (server.docroot / "stolen").exists(), up.stderr
    down = run_ascp(fasp_args(server, "--apply-local-docroot", remote(server, "/x.bin"), "/out/victim"), env)
    assert down.returncode == 41, down.stderr
    _untouched(outside)
    ok = run_ascp(fasp_args(server, "--apply-local-docroot", remote(server, "/x.bin"), "/x.bin"), env)
    assert ok.returncode == 0, ok.stderr
    assert_same_file(server.docroot / "x.bin", local / "x.bin")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("same_key", [True, False])
def test_sidecar_authenticated_with_the_servers_resume_key(tmp_path, monkeypatch, same_key):
    """FASP_RESUME_KEY (what fasp-server hands its engines): a sidecar made under that key (as the engine
    makes them) is honoured, a -k 2 check of its prefix follows; one under any other key is ignored."""
    key = os.urandom(32)
    monkeypatch.setattr(resume, "_key", None)
    monkeypatch.setenv(resume.RESUME_KEY_ENV, key.hex())
    size, mtime, have = 4096, 1_700_000_000, 100
    with start_fasp_server(tmp_path / "srv") as server:
        (server.docroot / "r").write_bytes(os.urandom(1000))
        st = (server.docroot / "r").stat()
        if not same_key:
            monkeypatch.setattr(resume, "_key", os.urandom(32))
        files = Docroot(str(server.docroot))
        mark = resume.Watermark(files, "r", (st.st_dev, st.st_ino), size, mtime)
        mark.mark(have)
        mark.close()
        files.close()

        async def offer() -> Message:
            async with ControlClient(server, "/", PeerOptions(resume=2, overwrite="diff")) as client:
                return await client.offer("r", size, mtime)

        answer = asyncio.run(offer())
    if same_key:
        assert isinstance(answer, Verify) and answer.have == have, answer
    else:
        assert isinstance(answer, Piece) and answer.start == 0, answer  # a full transfer


@pytest.mark.timeout(120)
def test_links_inside_are_followed_links_out_are_not(fasp_server, outside, tmp_path):
    """What users rely on stays, decided through the handle: a download follows a link inside the docroot
    (and an upload to a name that is one writes the file it names, after the overwrite rules judged that
    file); a link leaving is 41 and a loop 63, each failing alone."""
    server = fasp_server
    tree = server.docroot / "tree"
    real = random_file(tree / "a.bin", 5000)
    (tree / "in").symlink_to("a.bin")
    (tree / "out").symlink_to(outside / "victim")
    (tree / "loop").symlink_to("loop")
    back = tmp_path / "back"
    back.mkdir()
    mgr = MgmtListener()
    try:
        result = run_ascp(fasp_args(server, "-M", str(mgr.port), remote(server, "/tree"), str(back)), server.env())
        mgr.wait_for(lambda frame: frame.type == "DONE" or frame.type == "ERROR" and frame.get("File") is None)
    finally:
        mgr.close()
    assert result.returncode == 27
    codes = {frame.get("File").rsplit("/", 1)[-1]: frame.int("Code") for frame in mgr.of("FILEERROR")}
    assert codes == {"out": ErrorCode.BAD_PATH, "loop": ErrorCode.LINK_LOOP}, codes
    assert_same_file(real, back / "tree" / "a.bin")
    assert_same_file(real, back / "tree" / "in")
    assert not (back / "tree" / "out").exists() and not (back / "tree" / "loop").exists()
    err = result.stderr.decode(errors="replace")
    assert str(server.docroot) not in err and str(outside) not in err
    new = random_file(tmp_path / "new.bin", 5000)
    never = run_ascp(fasp_args(server, "--overwrite=never", str(new), remote(server, "/tree/in")), server.env())
    assert never.returncode == 0 and (tree / "in").is_symlink()
    assert_same_file(real, tree / "a.bin")  # the file the link names exists: never overwritten
    always = run_ascp(fasp_args(server, "--overwrite=always", str(new), remote(server, "/tree/in")), server.env())
    assert always.returncode == 0, always.stderr
    assert_same_file(new, tree / "a.bin")
    _untouched(outside)
