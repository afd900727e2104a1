"""Options that decide what happens to files at either end, through real transfers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.engine.helpers import MgmtListener, fasp_args, remote, run_ascp
from tests.support.files import assert_same_file, assert_same_tree, random_file
from tests.support.programs import ENGINE
from tests.support.root import needs_root
from tests.support.wait import wait_until


def _ok(result) -> None:
    assert result.returncode == 0, result.stderr.decode(errors="replace")


@pytest.mark.timeout(90)
def test_overwrite_policies_and_save_before_overwrite(fasp_server_module, tmp_path, listener, spawn):
    server = fasp_server_module
    src = random_file(tmp_path / "ow.bin", 20_000)
    target = server.docroot / "ow.bin"
    target.write_bytes(b"old content")
    _ok(run_ascp(fasp_args(server, "--overwrite=never", str(src), remote(server, "/ow.bin")), server.env()))
    assert target.read_bytes() == b"old content"
    _ok(
        run_ascp(
            fasp_args(server, "--overwrite=always", "--save-before-overwrite", str(src), remote(server, "/ow.bin")),
            server.env(),
        )
    )
    assert_same_file(src, target)
    saved = [p for p in server.docroot.iterdir() if p.name.startswith("ow.") and p.name != "ow.bin"]
    assert len(saved) == 1 and saved[0].read_bytes() == b"old content"
    # diff with -k 3: identical content is skipped (reported as SKIP), no byte moves
    proc = spawn(
        [
            "-q",
            "-P",
            str(server.port),
            "-M",
            str(listener.port),
            "--overwrite=diff",
            "-k",
            "3",
            str(src),
            remote(server, "/ow.bin"),
        ],
        server.env(),
    )
    assert proc.wait(30) == 0
    assert listener.of("SKIP") and listener.of("DONE")[0].int("TransferBytes") == 0


@pytest.mark.timeout(60)
def test_partial_file_suffix_until_complete(fasp_server_module, tmp_path):
    server = fasp_server_module
    src = random_file(tmp_path / "suffixed.bin", 3 << 20)
    _ok(
        run_ascp(
            fasp_args(server, "--partial-file-suffix=.partial", str(src), remote(server, "/suffixed.bin")), server.env()
        )
    )
    assert_same_file(src, server.docroot / "suffixed.bin")
    assert not (server.docroot / "suffixed.bin.partial").exists()
    # a leftover partial with the right prefix is resumed, not resent
    src2 = random_file(tmp_path / "resumed.bin", 2 << 20)
    (server.docroot / "resumed.bin.partial").write_bytes(src2.read_bytes()[: 1 << 20])
    _ok(
        run_ascp(
            fasp_args(server, "--partial-file-suffix=.partial", "-k", "3", str(src2), remote(server, "/resumed.bin")),
            server.env(),
        )
    )
    assert_same_file(src2, server.docroot / "resumed.bin")
    assert not (server.docroot / "resumed.bin.partial").exists()


@pytest.mark.timeout(60)
def test_download_moves_sources_and_prunes_directories(fasp_server_module, tmp_path):
    server = fasp_server_module
    tree = server.docroot / "tomove"
    files = [random_file(tree / "a" / "one.bin", 1000), random_file(tree / "b" / "c" / "two.bin", 2000)]
    (tmp_path / "orig").mkdir()
    copies = [Path(shutil.copy(f, tmp_path / "orig")) for f in files]
    local = tmp_path / "local"
    local.mkdir()
    _ok(
        run_ascp(
            fasp_args(
                server,
                "--move-after-transfer=/archive",
                "--remove-empty-directories",
                remote(server, "/tomove"),
                str(local),
            ),
            server.env(),
        )
    )
    assert_same_file(copies[0], local / "tomove" / "a" / "one.bin")
    assert_same_file(copies[1], local / "tomove" / "b" / "c" / "two.bin")
    assert_same_file(copies[0], server.docroot / "archive" / "tomove" / "a" / "one.bin")
    assert_same_file(copies[1], server.docroot / "archive" / "tomove" / "b" / "c" / "two.bin")
    assert tree.is_dir() and list(tree.iterdir()) == []  # emptied subdirectories pruned, the top kept


@pytest.mark.timeout(60)
def test_upload_removes_sources_with_their_directory(fasp_server_module, tmp_path):
    server = fasp_server_module
    tree = tmp_path / "rm-tree"
    src = random_file(tree / "x" / "f.bin", 5000)
    data = src.read_bytes()
    _ok(
        run_ascp(
            fasp_args(
                server, "--remove-after-transfer", "--remove-empty-source-directory", str(tree), remote(server, "/")
            ),
            server.env(),
        )
    )
    assert (server.docroot / "rm-tree" / "x" / "f.bin").read_bytes() == data
    assert not tree.exists()


@pytest.mark.timeout(60)
def test_manifest_and_source_prefix(fasp_server_module, tmp_path):
    server = fasp_server_module
    src = random_file(tmp_path / "pre" / "m.bin", 777)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    _ok(
        run_ascp(
            fasp_args(
                server,
                f"--source-prefix={tmp_path / 'pre'}",
                "--file-manifest=text",
                f"--file-manifest-path={manifests}",
                "m.bin",
                remote(server, "/m.bin"),
            ),
            server.env(),
        )
    )
    assert_same_file(src, server.docroot / "m.bin")
    [manifest] = list(manifests.iterdir())
    assert manifest.read_text().splitlines() == [f"passed\t{src}"]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_datagram_size_and_private_key_from_environment(tmp_path):
    """-Z 9000 on loopback, and ASPERA_SCP_KEY (the key itself in the environment) against fasp-server."""
    import asyncssh

    from tests.support.servers import start_fasp_server

    key = asyncssh.generate_private_key("ssh-ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_bytes(key.export_public_key())
    with start_fasp_server(tmp_path / "srv", authorized_keys=authorized) as server:
        src = random_file(tmp_path / "jumbo.bin", 5 << 20)
        env = {k: v for k, v in os.environ.items() if k != "ASPERA_SCP_PASS"}
        env["ASPERA_SCP_KEY"] = key.export_private_key().decode()
        _ok(run_ascp(fasp_args(server, "-Z", "9000", str(src), remote(server, "/jumbo.bin")), env))
        assert_same_file(src, server.docroot / "jumbo.bin")


@pytest.mark.timeout(60)
@needs_root("a source file of another owner (chown)")
def test_owner_and_access_times(fasp_server_module, tmp_path):
    """--preserve-file-owner-uid/gid (we run as root), --preserve-access-time, --preserve-source-access-time."""
    server = fasp_server_module
    src = random_file(tmp_path / "owned.bin", 3000)
    os.chown(src, 1234, 2345)
    os.utime(src, (1_200_000_000, 1_300_000_000))
    _ok(
        run_ascp(
            fasp_args(
                server,
                "--preserve-file-owner-uid",
                "--preserve-file-owner-gid",
                "--preserve-access-time",
                "--preserve-source-access-time",
                str(src),
                remote(server, "/owned.bin"),
            ),
            server.env(),
        )
    )
    landed = server.docroot / "owned.bin"
    theirs, ours = landed.stat(), src.stat()  # before hashing reads them (relatime would move atime)
    assert (theirs.st_uid, theirs.st_gid) == (1234, 2345)
    assert int(theirs.st_atime) == 1_200_000_000
    assert int(theirs.st_mtime) != 1_300_000_000  # only what was asked is preserved
    assert int(ours.st_atime) == 1_200_000_000  # reading the source did not move its atime
    assert_same_file(src, landed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_delete_before_transfer(fasp_server_module, tmp_path, direction):
    """Entries below the destination directory that the source lacks are deleted; the rest arrives."""
    server = fasp_server_module
    here, there = tmp_path / "mirror", server.docroot / f"mirror-{direction}"
    src_root, dst_parent = (here, there) if direction == "upload" else (there, here)
    keep = random_file(src_root / "mirror" / "sub" / "keep.bin", 4000)
    dst = dst_parent / "mirror"
    random_file(dst / "stale.bin", 10)
    random_file(dst / "old-dir" / "deep" / "x.bin", 10)
    random_file(dst / "sub" / "stale-too.bin", 10)
    random_file(dst / "sub" / "keep.bin", 10)
    paths = (
        [str(src_root / "mirror"), remote(server, f"/mirror-{direction}")]
        if direction == "upload"
        else [remote(server, f"/mirror-{direction}/mirror"), str(dst_parent)]
    )
    _ok(run_ascp(fasp_args(server, "--delete-before-transfer", *paths), server.env()))
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*")) == ["sub", "sub/keep.bin"]
    assert_same_file(keep, dst / "sub" / "keep.bin")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_delete_before_transfer_into_a_destination_without_the_directory(fasp_server_module, tmp_path, direction):
    """The first mirror of a tree: its directory is not at the destination yet, so nothing is deleted and the
    whole tree arrives (the prune opened the missing directory and ended the session)."""
    server = fasp_server_module
    here, there = tmp_path / "first", server.docroot / f"first-{direction}"
    src_parent, dst_parent = (here, there) if direction == "upload" else (there, here)
    random_file(src_parent / "tree" / "a.bin", 4000)
    random_file(src_parent / "tree" / "sub" / "b.bin", 70_000)
    dst_parent.mkdir(parents=True)
    paths = (
        [str(src_parent / "tree"), remote(server, f"/first-{direction}")]
        if direction == "upload"
        else [remote(server, f"/first-{direction}/tree"), str(dst_parent)]
    )
    _ok(run_ascp(fasp_args(server, "--delete-before-transfer", *paths), server.env()))
    assert assert_same_tree(src_parent / "tree", dst_parent / "tree") == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_symbolic_links_copied_as_links(fasp_server_module, tmp_path, direction):
    server = fasp_server_module
    here, there = tmp_path / "l", server.docroot / f"links-{direction}"
    src_parent, dst_parent = (here, there) if direction == "upload" else (there, here)
    real = random_file(src_parent / "linked" / "real.bin", 1500)
    (src_parent / "linked" / "rel-link").symlink_to("real.bin")
    # dangling but inside: a server creates a client's link only if its target stays in the docroot
    # (tests/security/test_confinement.py: absolute and escaping targets are refused, that file alone)
    (src_parent / "linked" / "dangling").symlink_to("nowhere/at/all")
    dst_parent.mkdir(parents=True, exist_ok=True)
    paths = (
        [str(src_parent / "linked"), remote(server, f"/links-{direction}")]
        if direction == "upload"
        else [remote(server, f"/links-{direction}/linked"), str(dst_parent)]
    )
    _ok(run_ascp(fasp_args(server, "--symbolic-links=copy", *paths), server.env()))
    out = dst_parent / "linked"
    assert_same_file(real, out / "real.bin")
    assert os.readlink(out / "rel-link") == "real.bin" and os.readlink(out / "dangling") == "nowhere/at/all"
    # an existing regular file is only replaced by a link with copy+force
    (out / "rel-link").unlink()
    (out / "rel-link").write_bytes(b"a file now")
    _ok(run_ascp(fasp_args(server, "--symbolic-links=copy", *paths), server.env()))
    assert (out / "rel-link").read_bytes() == b"a file now"
    _ok(run_ascp(fasp_args(server, "--symbolic-links=copy+force", *paths), server.env()))
    assert os.readlink(out / "rel-link") == "real.bin"


@pytest.mark.timeout(60)
def test_extended_attributes_native(fasp_server_module, tmp_path):
    server = fasp_server_module
    src = random_file(tmp_path / "xattr.bin", 2000)
    os.setxattr(src, "user.colour", b"blue\x00\xff")
    _ok(run_ascp(fasp_args(server, "--preserve-xattrs=native", str(src), remote(server, "/xattr.bin")), server.env()))
    assert_same_file(src, server.docroot / "xattr.bin")
    assert os.getxattr(server.docroot / "xattr.bin", "user.colour") == b"blue\x00\xff"
    _ok(run_ascp(fasp_args(server, str(src), remote(server, "/plain.bin")), server.env()))
    assert "user.colour" not in os.listxattr(server.docroot / "plain.bin")


def _shares_a_window(plain: bytes, stored: bytes, window: int = 64) -> bool:
    """Whether some ``window``-byte run of ``plain`` appears in ``stored``: any such run holds a whole
    aligned chunk of half its length, so look for those at every offset of ``stored``."""
    half = window // 2
    chunks = {plain[i : i + half] for i in range(0, len(plain) - half + 1, half)}
    return any(stored[i : i + half] in chunks for i in range(len(stored) - half + 1))


def _plain_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".aspera-env")]


@pytest.mark.timeout(120)
def test_content_protection_round_trip(fasp_server_module, tmp_path):
    """--file-crypt=encrypt stores an authenticated envelope the server cannot read (fasp/files/envelope.py
    documents the format); decrypt restores the bytes; a wrong passphrase is 49, a tampered or
    truncated envelope 48, and neither leaves decrypted bytes behind."""
    from fasp.files.envelope import sealed_size

    server = fasp_server_module
    tree = tmp_path / "secret"
    files = [
        random_file(tree / "a.bin", 3 << 20),
        random_file(tree / "sub" / "b.bin", 1000),
        random_file(tree / "empty.bin", 0),
    ]
    env = {**server.env(), "ASPERA_SCP_FILEPASS": "correct horse"}
    _ok(run_ascp(fasp_args(server, "-d", "--file-crypt=encrypt", str(tree), remote(server, "/vault")), env))
    vault = server.docroot / "vault" / "secret"
    for f in files:
        stored = vault / (str(f.relative_to(tree)) + ".aspera-env")
        size = f.stat().st_size
        blocks = max(1, -(-size // (64 << 10)))
        assert stored.stat().st_size == sealed_size(size) == size + 64 + 16 * blocks
        assert not _shares_a_window(f.read_bytes(), stored.read_bytes())
    assert not (vault / "a.bin").exists()
    assert "correct horse" not in (server.docroot.parent / "fasp-server.log").read_text()

    wrong_back = tmp_path / "wrong"
    wrong_back.mkdir()
    wrong = {**env, "ASPERA_SCP_FILEPASS": "wrong"}
    failed = run_ascp(
        fasp_args(server, "--file-crypt=decrypt", remote(server, "/vault/secret"), str(wrong_back)), wrong
    )
    assert failed.returncode == 49, failed.stderr.decode()
    assert not _plain_files(wrong_back)

    back = tmp_path / "back"
    back.mkdir()
    _ok(run_ascp(fasp_args(server, "--file-crypt=decrypt", remote(server, "/vault/secret"), str(back)), env))
    for f in files:
        assert_same_file(f, back / "secret" / f.relative_to(tree))
    assert not list((back / "secret").rglob("*.aspera-env"))

    whole = (vault / "a.bin.aspera-env").read_bytes()
    damaged = bytearray(whole)
    damaged[len(whole) // 2] ^= 0x01
    for name, content in [("tampered", bytes(damaged)), ("truncated", whole[: -(1 << 10)])]:
        (server.docroot / f"{name}.bin.aspera-env").write_bytes(content)
        out = tmp_path / name
        out.mkdir()
        result = run_ascp(
            fasp_args(server, "--file-crypt=decrypt", remote(server, f"/{name}.bin.aspera-env"), str(out)), env
        )
        assert result.returncode == 48, (name, result.returncode, result.stderr.decode())
        assert not _plain_files(out), name


@pytest.mark.timeout(60)
def test_apply_local_docroot(fasp_server_module, tmp_path):
    """--apply-local-docroot confines local paths to FASP_LOCAL_DOCROOT, like the server's docroot."""
    server = fasp_server_module
    local_root = tmp_path / "local-root"
    src = random_file(local_root / "in" / "l.bin", 1234)
    env = {**server.env(), "FASP_LOCAL_DOCROOT": str(local_root)}
    _ok(run_ascp(fasp_args(server, "--apply-local-docroot", "/in/l.bin", remote(server, "/l.bin")), env))
    assert_same_file(src, server.docroot / "l.bin")
    _ok(run_ascp(fasp_args(server, "--apply-local-docroot", remote(server, "/l.bin"), "/back.bin"), env))
    assert_same_file(src, local_root / "back.bin")
    escape = run_ascp(fasp_args(server, "--apply-local-docroot", remote(server, "/l.bin"), "/../escaped.bin"), env)
    assert escape.returncode == 41 and not (tmp_path / "escaped.bin").exists()
    unset = run_ascp(fasp_args(server, "--apply-local-docroot", "/in/l.bin", remote(server, "/x")), server.env())
    assert unset.returncode == 8


@pytest.mark.timeout(90)
def test_two_nodes_share_one_transfer(fasp_server_module, tmp_path):
    """-C 1:2 and -C 2:2 at once: small files by turns, a file above --multi-session-threshold cut in
    two ranges; together they deliver the tree exactly once, each about half of it."""
    server = fasp_server_module
    tree = tmp_path / "shared"
    for i in range(10):
        random_file(tree / f"s{i}.bin", 10_000 + i)
    big = random_file(tree / "big.bin", 6 << 20)
    os.utime(big, ns=(1_234_567_890_123_456_789, 1_111_111_111_222_333_444))  # -p: each range sets them
    listeners = [MgmtListener(), MgmtListener()]
    procs = [
        subprocess.Popen(
            [
                *ENGINE,
                *fasp_args(
                    server,
                    "-M",
                    str(mgr.port),
                    f"-C{node}:2",
                    "-p",
                    "--multi-session-threshold=1048576",
                    str(tree),
                    remote(server, "/"),
                ),
            ],
            env=server.env(),
        )
        for node, mgr in zip((1, 2), listeners)
    ]
    try:
        assert [p.wait(60) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for mgr in listeners:
            mgr.close()
    assert assert_same_tree(tree, server.docroot / "shared") == 11
    moved = [mgr.of("DONE")[0].int("TransferBytes") for mgr in listeners]
    assert sum(moved) == sum(f.stat().st_size for f in tree.iterdir())
    assert all(m > big.stat().st_size // 3 for m in moved)
    assert (
        server.docroot / "shared" / "big.bin"
    ).stat().st_mtime_ns == big.stat().st_mtime_ns  # the last range leaves it right


@pytest.mark.timeout(90)
def test_nodes_send_an_envelope_whole(fasp_server_module, tmp_path):
    """--file-crypt with -C and --multi-session-threshold: an envelope is sealed and opened whole, so no node
    sends a range of it; the file above the threshold goes whole to one node and arrives sealed once (upload),
    decrypted (download)."""
    server = fasp_server_module
    env = {**server.env(), "ASPERA_SCP_FILEPASS": "correct horse"}
    src = random_file(tmp_path / "split" / "big.bin", 3_000_000)
    split = ("--multi-session-threshold=1000000", str(src.parent))
    for node in (1, 2):
        _ok(run_ascp(fasp_args(server, f"-C{node}:2", "--file-crypt=encrypt", *split, remote(server, "/")), env))
    back = tmp_path / "back"
    back.mkdir()
    _ok(run_ascp(fasp_args(server, "--file-crypt=decrypt", remote(server, "/split"), str(back)), env))
    assert_same_file(src, back / "split" / "big.bin")

    down = tmp_path / "down"
    down.mkdir()
    for node in (1, 2):
        shared = (f"-C{node}:2", "--file-crypt=decrypt", "--multi-session-threshold=1000000")
        _ok(run_ascp(fasp_args(server, *shared, remote(server, "/split"), str(down)), env))
    assert_same_file(src, down / "split" / "big.bin")
    assert not list(down.rglob("*.aspera-env"))


@pytest.mark.timeout(60)
def test_pre_post_program(fasp_server_module, tmp_path):
    """-e PATH runs at session start, after each file and at session end, without our secrets."""
    server = fasp_server_module
    record = tmp_path / "calls.txt"
    hook = tmp_path / "hook.sh"
    hook.write_text(
        f'#!/bin/sh\necho "$TYPE $STARTSTOP ${{STATUS:-}} ${{FILE:-}} ${{ASPERA_SCP_PASS:-nopass}}" >> {record}\n'
    )
    hook.chmod(0o755)
    files = [random_file(tmp_path / "pp" / f"{n}.bin", 100) for n in ("a", "b")]
    _ok(run_ascp(fasp_args(server, "-e", str(hook), str(tmp_path / "pp"), remote(server, "/")), server.env()))
    lines = record.read_text().splitlines()
    assert lines[0] == "Session Start   nopass" and lines[-1].startswith("Session Stop OK")
    assert sorted(line for line in lines if line.startswith("File")) == [f"File Stop OK {f} nopass" for f in files]
    assert server.password not in record.read_text()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_session_start_program_runs_ends_the_session_as_28(fasp_server_module, tmp_path, signum):
    """A Ctrl-C (or a TERM) while -e's Session/Start run goes ends the session as one later does: 28, nothing
    sent, the Session/Stop run told ERROR; it killed the engine with a traceback (or outright) before."""
    server = fasp_server_module
    record, hook = tmp_path / "calls.txt", tmp_path / "hook.sh"
    hook.write_text(
        f'#!/bin/sh\necho "$TYPE $STARTSTOP ${{STATUS:-}} ${{ERRCODE:-}}" >> {record}\n'
        '[ "$STARTSTOP" = Start ] && sleep 3\n'
    )
    hook.chmod(0o755)
    src = random_file(tmp_path / "sig.bin", 1000)
    args = [*ENGINE, *fasp_args(server, "-e", str(hook), str(src), remote(server, "/sig.bin"))]
    proc = subprocess.Popen(args, env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wait_until(lambda: record.exists(), 10)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 28, err.decode(errors="replace")
    assert b"Traceback" not in err and b"error 28: interrupted by signal" in err, err
    assert record.read_text().splitlines() == ["Session Start  ", "Session Stop ERROR 28"]
    assert not (server.docroot / "sig.bin").exists()
