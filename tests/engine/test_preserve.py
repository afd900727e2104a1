"""Every preserve option, upload and download, through the real engine: each case checks the effect on
disk, and a case without the option checks its absence, so an ignored option fails (fasp/files/attrs.py
documents the behaviour, the metafile format and the creation-time record)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engine.helpers import run_ascp
from tests.support.files import assert_same_file, random_file
from tests.support.root import require_root

UID, GID = 12345, 23456
TIMES = {
    "a.bin": (1_000_000_000_123_456_789, 1_100_000_000_987_654_321),  # (atime, mtime) in ns, 2001/2004
    "b.bin": (1_010_000_000_000_000_001, 1_111_111_111_222_222_222),
}
DIR_TIMES = {
    ".": (1_020_000_000_000_000_003, 1_120_000_000_000_000_004),  # the source directory itself
    "sub": (1_030_000_000_000_000_005, 1_130_000_000_000_000_006),
}
COLOUR = b"blue\x00\xff"
ACL = "u:12345:r--,g:23456:rw-"
CREATED = "user.fasp.creation_time"
META = ".aspera-meta"


@dataclass
class Remote:
    """The far end as the client sees it: fasp-server (password) or a stock sshd (key, runs fasp itself)."""

    args: list[str]
    login: str
    docroot: Path
    env: dict

    @classmethod
    def of(cls, server) -> Remote:
        if hasattr(server, "identity"):
            return cls(
                ["-q", "-P", str(server.port), "-i", str(server.identity)],
                f"root@{server.host}",
                server.docroot,
                server.env(),
            )
        return cls(["-q", "-P", str(server.port)], f"{server.user}@{server.host}", server.docroot, server.env())

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return run_ascp([*self.args, *args], self.env)

    def move(
        self,
        tmp_path: Path,
        direction: str,
        case: str,
        flags: list[str],
        build: Callable[[Path], None],
        before: Callable[[Path], None] = lambda dst: None,
    ) -> tuple[Path, Path]:
        """Build directory ``case`` on the sending side, transfer it with ``flags``; (source, destination).
        ``before`` may prepare the destination directory first."""
        here, there = tmp_path / direction, self.docroot / direction
        src_parent, dst_parent = (here, there) if direction == "upload" else (there, here)
        src, dst = src_parent / case, dst_parent / case
        src.mkdir(parents=True)
        dst.mkdir(parents=True, exist_ok=True)
        build(src)
        before(dst)
        paths = (
            [str(src), f"{self.login}:/{direction}"]
            if direction == "upload"
            else [f"{self.login}:/{direction}/{case}", str(dst_parent)]
        )
        done = self.run(*flags, *paths)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return src, dst


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _acl_text(path: Path) -> str:
    """The file's ACL as getfacl prints it with numeric ids, one entry per line joined by commas."""
    out = subprocess.run(["getfacl", "-n", "-c", "-p", str(path)], capture_output=True, text=True, check=True)
    return ",".join(line for line in out.stdout.splitlines() if line)


def _native(path: Path) -> dict[str, bytes]:
    """The attributes that may travel: user.* and the access ACL."""
    return {
        n: os.getxattr(path, n) for n in os.listxattr(path) if n.startswith("user.") or n == "system.posix_acl_access"
    }


def _birth_ns(path: Path) -> int:
    """Birth time as coreutils' stat reports it (statx), independent of the engine's reading."""
    out = subprocess.run(["stat", "-c", "%.9W", str(path)], capture_output=True, text=True, check=True).stdout
    seconds, _, nanos = out.strip().partition(".")
    assert int(seconds) > 0, f"{path}: the filesystem reports no birth time"
    return int(seconds) * 1_000_000_000 + int(nanos)


@pytest.fixture(autouse=True)
def _attributes_supported(tmp_path, fasp_server_module):
    """Fail, never skip, where user xattrs or POSIX ACLs are missing: a skipped test proves nothing."""
    for where in (tmp_path, fasp_server_module.docroot):
        probe = random_file(where / "probe.tmp", 1)
        os.setxattr(probe, "user.probe", b"1")
        subprocess.run(["setfacl", "-m", ACL, str(probe)], check=True)
        assert "system.posix_acl_access" in os.listxattr(probe)
        probe.unlink()


def _timed_owned(src: Path) -> None:
    """Files and directories with distinctive old times and a foreign owner (sub/c.bin keeps its own
    times: it is there to land in sub after sub's times were set)."""
    require_root("files of another owner (chown)")
    random_file(src / "sub" / "c.bin", 1000)
    for name, (atime, mtime) in {**TIMES, **DIR_TIMES}.items():
        path = src / name
        if name in TIMES:
            random_file(path, 200_000 if name == "a.bin" else 3000)
        os.chown(path, UID, GID)
        os.utime(path, ns=(atime, mtime))


def _attributed(src: Path) -> None:
    """a.bin with user attributes and an ACL; its directory with a default ACL (set last: a.bin has
    only its own)."""
    path = random_file(src / "a.bin", 50_000)
    os.setxattr(path, "user.colour", COLOUR)
    os.setxattr(path, "user.empty", b"")
    subprocess.run(["setfacl", "-m", ACL, str(path)], check=True)
    subprocess.run(["setfacl", "-d", "-m", ACL, str(src)], check=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
@pytest.mark.parametrize(
    "flags, kept",
    [
        ([], set()),
        (
            ["--preserve-access-time", "--preserve-file-owner-uid", "--preserve-source-access-time"],
            {"atime", "uid", "source atime"},
        ),
        (["--preserve-modification-time", "--preserve-file-owner-gid"], {"mtime", "gid"}),
        (["-p"], {"atime", "mtime"}),
    ],
    ids=["none", "atime-uid-source_atime", "mtime-gid", "p"],
)
def test_times_and_owner(fasp_server_module, tmp_path, request, direction, flags, kept):
    remote = Remote.of(fasp_server_module)
    src, dst = remote.move(tmp_path, direction, "t-" + request.node.callspec.id, flags, _timed_owned)
    theirs = {name: os.stat(dst / name) for name in [*TIMES, *DIR_TIMES]}  # before hashing or listing
    ours = {name: os.stat(src / name) for name in TIMES}
    for name, (atime, mtime) in {**TIMES, **DIR_TIMES}.items():
        if name in TIMES:  # a directory's access time is the walk's, which reads it (fasp/files/attrs.py)
            assert (theirs[name].st_atime_ns == atime) == ("atime" in kept), name
        assert (theirs[name].st_mtime_ns == mtime) == ("mtime" in kept), name
        assert theirs[name].st_uid == (UID if "uid" in kept else 0), name
        assert theirs[name].st_gid == (GID if "gid" in kept else 0), name
    for name, (atime, mtime) in TIMES.items():
        assert (ours[name].st_atime_ns == atime) == ("source atime" in kept), name
        assert ours[name].st_mtime_ns == mtime  # the source is never changed
        assert_same_file(src / name, dst / name)
    assert_same_file(src / "sub" / "c.bin", dst / "sub" / "c.bin")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_creation_time_recorded_and_carried_over_hops(fasp_server_module, tmp_path, direction):
    remote = Remote.of(fasp_server_module)
    back = "download" if direction == "upload" else "upload"
    src, dst = remote.move(
        tmp_path, direction, "c-with", ["--preserve-creation-time"], lambda d: random_file(d / "a.bin", 10_000)
    )
    born = _birth_ns(src / "a.bin")
    assert os.getxattr(dst / "a.bin", CREATED) == str(born).encode()
    assert_same_file(src / "a.bin", dst / "a.bin")
    # the next hop sends the recorded creation time, not the (newer) birth time of the copy
    assert _birth_ns(dst / "a.bin") > born
    _, hop = remote.move(
        tmp_path, back, "c-hop", ["--preserve-creation-time"], lambda d: os.link(dst / "a.bin", d / "a.bin")
    )
    assert os.getxattr(hop / "a.bin", CREATED) == str(born).encode()
    assert_same_file(src / "a.bin", hop / "a.bin")
    src, dst = remote.move(tmp_path, direction, "c-without", [], lambda d: random_file(d / "a.bin", 10_000))
    assert CREATED not in os.listxattr(dst / "a.bin")
    assert_same_file(src / "a.bin", dst / "a.bin")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
@pytest.mark.parametrize(
    "flags, kept",
    [
        pytest.param([], set(), id="none"),
        pytest.param(["--preserve-xattrs=none", "--remote-preserve-xattrs=native"], set(), id="one-side-none"),
        pytest.param(["--preserve-xattrs=native"], {"user.colour", "user.empty"}, id="xattrs"),
        pytest.param(["--preserve-acls=native"], {"system.posix_acl_access"}, id="acls"),
    ],
)
def test_native_xattrs_and_acls(fasp_server_module, tmp_path, request, direction, flags, kept):
    """Only the asked kind travels, and only when neither side's mode is none; a destination
    overwritten in native mode loses attributes the source lacks (the same inode is rewritten, so
    they would otherwise survive), and keeps them when that kind does not travel."""
    remote = Remote.of(fasp_server_module)

    def stale(dst: Path) -> None:
        os.setxattr(random_file(dst / "a.bin", 10), "user.stale", b"old")

    src, dst = remote.move(tmp_path, direction, "x-" + request.node.callspec.id, flags, _attributed, stale)
    want = {n: v for n, v in _native(src / "a.bin").items() if n in kept}
    got = _native(dst / "a.bin")
    if "user.colour" in kept:
        assert got == want
    else:
        assert {n: v for n, v in got.items() if n != "user.stale"} == want
        assert got.get("user.stale") == b"old"  # xattrs mode none: the destination's own are left alone
    default = "system.posix_acl_default"
    if kept == {"system.posix_acl_access"}:
        assert _acl_text(dst / "a.bin") == _acl_text(src / "a.bin")
        assert os.getxattr(dst, default) == os.getxattr(src, default)
    else:
        assert default not in os.listxattr(dst)
    assert _files(dst) == ["a.bin"]
    assert_same_file(src / "a.bin", dst / "a.bin")


NATIVE_HERE_METAFILE_THERE = [
    "--preserve-xattrs=native",
    "--preserve-acls=native",
    "--remote-preserve-xattrs=metafile",
    "--remote-preserve-acls=metafile",
]
METAFILE_HERE_NATIVE_THERE = [
    "--preserve-xattrs=metafile",
    "--preserve-acls=metafile",
    "--remote-preserve-xattrs=native",
    "--remote-preserve-acls=native",
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("metafiles", ["remote", "local"])
def test_metafile_round_trip(fasp_server_module, tmp_path, metafiles):
    """native -> metafile stores NAME.aspera-meta (and no native attribute); metafile -> native puts
    the attributes back on the file, and the metafile never travels as a file of its own."""
    remote = Remote.of(fasp_server_module)
    store, restore = ("upload", "download") if metafiles == "remote" else ("download", "upload")
    flags = NATIVE_HERE_METAFILE_THERE if metafiles == "remote" else METAFILE_HERE_NATIVE_THERE
    src, stored = remote.move(tmp_path, store, f"m-{metafiles}", flags, _attributed)
    assert _files(stored) == ["a.bin", "a.bin" + META]
    assert json.loads((stored / ("a.bin" + META)).read_text()) == {
        "format": "fasp-meta",
        "version": 1,
        "xattrs": {"user.colour": base64.b64encode(COLOUR).decode(), "user.empty": ""},
        "acls": {"access": _acl_text(src / "a.bin")},
    }
    assert _native(stored / "a.bin") == {}
    assert_same_file(src / "a.bin", stored / "a.bin")

    def copy(d: Path) -> None:
        for name in ("a.bin", "a.bin" + META):
            os.link(stored / name, d / name)

    _, restored = remote.move(tmp_path, restore, f"m-{metafiles}-back", flags, copy)
    assert _files(restored) == ["a.bin"]
    assert _native(restored / "a.bin") == _native(src / "a.bin")
    assert _acl_text(restored / "a.bin") == _acl_text(src / "a.bin")
    assert_same_file(src / "a.bin", restored / "a.bin")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_remote_modes_default_to_the_local_ones(fasp_server_module, tmp_path, direction):
    """--preserve-xattrs=metafile alone: this side reads the metafile (its red, not the native blue),
    the other side writes one (its own, not a copy: the hand-written note is gone).
    --remote-preserve-acls=native alone: this side reads native ACLs too, the other sets them."""
    remote = Remote.of(fasp_server_module)

    def build(d: Path) -> None:
        _attributed(d)
        (d / ("a.bin" + META)).write_text(
            json.dumps(
                {
                    "format": "fasp-meta",
                    "version": 1,
                    "note": "hand-written",
                    "xattrs": {"user.colour": base64.b64encode(b"red").decode()},
                }
            )
        )

    src, dst = remote.move(
        tmp_path, direction, "d", ["--preserve-xattrs=metafile", "--remote-preserve-acls=native"], build
    )
    assert _files(dst) == ["a.bin", "a.bin" + META]
    assert json.loads((dst / ("a.bin" + META)).read_text()) == {
        "format": "fasp-meta",
        "version": 1,
        "xattrs": {"user.colour": base64.b64encode(b"red").decode()},
    }
    assert _native(dst / "a.bin") == {"system.posix_acl_access": os.getxattr(src / "a.bin", "system.posix_acl_access")}
    assert_same_file(src / "a.bin", dst / "a.bin")


@pytest.mark.timeout(60)
def test_attributes_reach_the_decrypted_file(fasp_server_module, tmp_path):
    """--file-crypt: the stored envelope gets the attributes, and so does the file decrypted from it
    on download (a new file, so they are applied after decryption)."""
    remote = Remote.of(fasp_server_module)
    remote.env = {**remote.env, "ASPERA_SCP_FILEPASS": "correct horse"}
    flags = ["-p", "--preserve-file-owner-uid", "--preserve-xattrs=native"]

    def build(d: Path) -> None:
        _attributed(d)
        _timed_owned(d)

    src, stored = remote.move(tmp_path, "upload", "e", ["--file-crypt=encrypt", *flags], build)
    envelope = os.stat(stored / "a.bin.aspera-env")  # before the download reads it
    back = tmp_path / "decrypted"
    back.mkdir()
    done = remote.run("--file-crypt=decrypt", *flags, f"{remote.login}:/upload/e", str(back))
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    for copy, st in ((stored / "a.bin.aspera-env", envelope), (back / "e" / "a.bin", os.stat(back / "e" / "a.bin"))):
        assert (st.st_atime_ns, st.st_mtime_ns, st.st_uid) == (*TIMES["a.bin"], UID), copy
        assert os.getxattr(copy, "user.colour") == COLOUR
    assert_same_file(src / "a.bin", back / "e" / "a.bin")


@pytest.mark.timeout(60)
def test_delete_before_transfer_keeps_the_metafiles_of_kept_files(fasp_server_module, tmp_path):
    """A file the transfer skips keeps its metafile; what the source lacks goes, metafile included."""
    remote = Remote.of(fasp_server_module)

    def before(dst: Path) -> None:
        os.link(tmp_path / "upload" / "k" / "a.bin", dst / "a.bin")
        for name in ("a.bin" + META, "gone.bin", "gone.bin" + META):
            (dst / name).write_text("{}")

    src, dst = remote.move(
        tmp_path,
        "upload",
        "k",
        ["--delete-before-transfer", "--overwrite=never", "--preserve-xattrs=metafile"],
        lambda d: random_file(d / "a.bin", 100),
        before,
    )
    assert _files(dst) == ["a.bin", "a.bin" + META]
    assert (dst / ("a.bin" + META)).read_text() == "{}"


@pytest.mark.timeout(60)
def test_metadata_failures_are_file_errors_with_their_code(fasp_server_module, tmp_path, listener, spawn):
    """An unreadable source metafile fails its file with 35 (disk read); a metafile that cannot be
    written (a directory holds its name) fails its file with 7 (is a directory); the rest arrives."""
    remote = Remote.of(fasp_server_module)
    here = tmp_path / "fail"
    random_file(here / "bad.bin", 100)
    (here / ("bad.bin" + META)).write_text("{not json")
    good = random_file(here / "good.bin", 100)
    random_file(here / "blocked.bin", 100)
    (remote.docroot / "fail" / ("blocked.bin" + META)).mkdir(parents=True)
    proc = spawn(
        [*remote.args, "-M", str(listener.port), "--preserve-xattrs=metafile", str(here), f"{remote.login}:/"],
        remote.env,
    )
    assert proc.wait(30) == 27
    errors = {Path(f.get("File")).name: (f.int("Code"), f.get("Description")) for f in listener.of("FILEERROR")}
    assert errors.keys() == {"bad.bin", "blocked.bin"}
    assert errors["bad.bin"][0] == 35 and "unreadable metafile" in errors["bad.bin"][1]
    assert errors["blocked.bin"][0] == 7 and "cannot write metafile" in errors["blocked.bin"][1]
    assert_same_file(good, remote.docroot / "fail" / "good.bin")
    assert (remote.docroot / "fail" / ("good.bin" + META)).is_file()


@pytest.mark.timeout(60)
def test_through_faspmanager_session(fasp_server_module, tmp_path):
    """TransferOptions' preserve fields reach the engine and take effect."""
    import faspmanager as fm
    from tests.support.ports import free_port
    from tests.support.programs import engine_program

    server = fasp_server_module
    src = tmp_path / "mgr"
    _attributed(src)
    _timed_owned(src)
    options = fm.TransferOptions(
        tcp_port=server.port,
        destination_root="/",
        udp_port=free_port(socket.SOCK_DGRAM),
        preserve_dates=True,
        preserve_file_owner_uid=True,
        preserve_file_owner_gid=True,
        preserve_creation_time=True,
        preserve_xattrs=fm.PreserveMode.NATIVE,
        preserve_acls=fm.PreserveMode.NATIVE,
        remote_preserve_acls=fm.PreserveMode.METAFILE,
    )
    order = fm.FileUpload([str(src)], server.user, server.host, dest_pass=server.password, options=options)
    with fm.session(order, ascp_path=str(engine_program(tmp_path))) as s:
        s.start()
        result = s.finish()
    assert result.ok(), result.reason()
    dst = server.docroot / "mgr"
    theirs = os.stat(dst / "a.bin")
    assert (theirs.st_atime_ns, theirs.st_mtime_ns) == TIMES["a.bin"]
    assert (theirs.st_uid, theirs.st_gid) == (UID, GID)
    assert _native(dst / "a.bin") == {
        "user.colour": COLOUR,
        "user.empty": b"",
        CREATED: str(_birth_ns(src / "a.bin")).encode(),
    }
    assert json.loads((dst / ("a.bin" + META)).read_text())["acls"] == {"access": _acl_text(src / "a.bin")}
    assert _files(dst) == ["a.bin", "a.bin" + META, "b.bin", "b.bin" + META, "sub/c.bin", "sub/c.bin" + META]
    for name in TIMES:
        assert_same_file(src / name, dst / name)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_under_stock_sshd(openssh_server, tmp_path, direction):
    """The same effects when sshd starts the remote engine."""
    remote = Remote.of(openssh_server)

    def build(d: Path) -> None:
        _attributed(d)
        _timed_owned(d)  # rewrites a.bin in place: its attributes stay

    src, dst = remote.move(
        tmp_path,
        direction,
        "s",
        [
            "-p",
            "--preserve-file-owner-uid",
            "--preserve-file-owner-gid",
            "--preserve-xattrs=native",
            "--preserve-acls=native",
        ],
        build,
    )
    theirs = os.stat(dst / "a.bin")
    assert (theirs.st_atime_ns, theirs.st_mtime_ns, theirs.st_uid, theirs.st_gid) == (*TIMES["a.bin"], UID, GID)
    assert _native(dst / "a.bin") == _native(src / "a.bin")
    assert_same_file(src / "a.bin", dst / "a.bin")


def test_a_peer_cannot_set_privileged_attributes(tmp_path):
    """Only user.* and POSIX ACLs travel: security.*/trusted.* (capabilities, SELinux labels) from a
    peer, or a malformed ACL, end the session as a protocol error before anything is set."""
    from fasp.errors import ProtocolError
    from fasp.files.attrs import apply

    path = random_file(tmp_path / "f.bin", 10)
    opts = {"xattrs_mode": "native", "acls_mode": "native"}
    for name, value in [
        ("security.capability", b"\x01\x00\x00\x02"),
        ("trusted.x", b"1"),
        ("system.posix_acl_access", b"\x02\x00\x00\x00\x99\x00\x07\x00\xff\xff\xff\xff"),
    ]:
        meta = {"kinds": ["xattrs", "acls"], "xattrs": {name: base64.b64encode(value).decode()}}
        with pytest.raises(ProtocolError):
            apply(str(path), str(path), meta, opts)
    assert _native(path) == {}


@pytest.mark.parametrize(
    "text",
    [
        "user::rw-,user:12345:r--,group::r-x,group:23456:rw-,mask::rwx,other::---",
        "user::rwx,user:0:--x,group::---,mask::--x,other::r--",
    ],
)
def test_acl_text_round_trip_matches_the_kernel(tmp_path, text):
    """The metafile's ACL text becomes the kernel's ACL (getfacl agrees) and back, byte for byte."""
    from fasp.files.attrs import acl_blob, acl_text

    path = random_file(tmp_path / "f.bin", 10)
    os.setxattr(path, "system.posix_acl_access", acl_blob(text))
    assert _acl_text(path) == text
    assert acl_text(os.getxattr(path, "system.posix_acl_access")) == text
    for bad in ["user::rw", "user:x:rw-", "owner::rw-", "mask:1:rw-", "user::wr-"]:
        with pytest.raises(ValueError):
            acl_blob(bad)
