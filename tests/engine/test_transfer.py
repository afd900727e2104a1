"""Real transfers through real SSH on loopback: fasp-server (asyncssh) and a stock OpenSSH sshd.

Every test checks the bytes that arrived (size and sha256).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.engine.helpers import fasp_args, remote, run_ascp
from tests.support.files import assert_same_file, assert_same_tree, random_file, sha256
from tests.support.procs import cmdline, descendants
from tests.support.programs import ENGINE
from tests.support.wait import wait_until

SIZES = {"empty": 0, "one_byte": 1, "ten_mib": 10 << 20}


def _ok(result) -> None:
    assert result.returncode == 0, result.stderr.decode(errors="replace")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(SIZES))
def test_upload_then_download_one_file(fasp_server_module, tmp_path, name):
    server = fasp_server_module
    src = random_file(tmp_path / f"{name}.bin", SIZES[name])
    _ok(run_ascp(fasp_args(server, str(src), remote(server, f"/up-{name}.bin")), server.env()))
    assert_same_file(src, server.docroot / f"up-{name}.bin")

    back = tmp_path / "back"
    back.mkdir()
    _ok(run_ascp(fasp_args(server, remote(server, f"/up-{name}.bin"), str(back)), server.env()))
    assert_same_file(src, back / f"up-{name}.bin")


@pytest.mark.timeout(120)
def test_sparse_gigabyte_both_ways(fasp_server_module, tmp_path):
    """A 1 GiB file that is mostly hole: its holes do not travel, its data does, and it stays sparse."""
    server = fasp_server_module
    src = tmp_path / "sparse.img"
    with open(src, "wb") as handle:
        handle.truncate(1 << 30)
        handle.seek(500 << 20)
        handle.write(os.urandom(1 << 20))
        handle.seek((1 << 30) - 4096)
        handle.write(os.urandom(100))
    digest = sha256(src)
    _ok(run_ascp(fasp_args(server, str(src), remote(server, "/sparse.img")), server.env()))
    landed = server.docroot / "sparse.img"
    assert_same_file(src, landed, digest)
    assert landed.stat().st_blocks * 512 < 16 << 20  # the holes stayed holes

    back = tmp_path / "back.img"
    _ok(run_ascp(fasp_args(server, remote(server, "/sparse.img"), str(back)), server.env()))
    assert_same_file(src, back, digest)
    assert back.stat().st_blocks * 512 < 16 << 20


def _make_tree(root: Path, files: int) -> Path:
    for i in range(files):
        sub = root / f"d{i % 10}" / f"e{i % 7}" / ("deep" if i % 3 == 0 else "")
        random_file(sub / f"f{i}.dat", (i * 37) % 3000)
    (root / "empty-dir").mkdir()
    return root


@pytest.mark.timeout(180)
def test_tree_of_a_thousand_files_both_ways(fasp_server_module, tmp_path):
    server = fasp_server_module
    tree = _make_tree(tmp_path / "tree1000", 1000)
    _ok(run_ascp(fasp_args(server, "-d", str(tree), remote(server, "/trees")), server.env(), timeout=150))
    assert assert_same_tree(tree, server.docroot / "trees" / "tree1000") == 1000

    back = tmp_path / "back"
    back.mkdir()
    _ok(run_ascp(fasp_args(server, remote(server, "/trees/tree1000"), str(back)), server.env(), timeout=150))
    assert assert_same_tree(tree, back / "tree1000") == 1000


@pytest.mark.timeout(60)
def test_an_older_guides_qtr_command_line_copies_a_tree_both_ways(fasp_server_module, tmp_path):
    """``ascp -QTr -l 300M SOURCE DEST`` (NCBI's and university guides' spelling): -r, older ascp's recursive switch,
    was usage error 8 here; directories are always copied whole, so it is accepted and the tree arrives."""
    server = fasp_server_module
    tree = _make_tree(tmp_path / "qtr", 20)
    _ok(run_ascp(fasp_args(server, "-QTr", "-l", "300M", str(tree), remote(server, "/")), server.env()))
    assert assert_same_tree(tree, server.docroot / "qtr") == 20
    back = tmp_path / "back"
    back.mkdir()
    _ok(run_ascp(fasp_args(server, "-QTr", remote(server, "/qtr"), str(back)), server.env()))
    assert assert_same_tree(tree, back / "qtr") == 20


@pytest.mark.timeout(60)
def test_names_with_spaces_and_non_ascii(fasp_server_module, tmp_path):
    server = fasp_server_module
    tree = tmp_path / "spaced dir ünï"
    files = [tree / "a file.txt", tree / "日本語 ファイル.bin", tree / "sub dir" / "ça va?.dat", tree / "😀.txt"]
    for i, path in enumerate(files):
        random_file(path, 1000 + i)
    _ok(run_ascp(fasp_args(server, str(tree), remote(server, "/")), server.env()))
    assert assert_same_tree(tree, server.docroot / tree.name) == len(files)

    back = tmp_path / "back"
    back.mkdir()
    _ok(
        run_ascp(
            fasp_args(server, remote(server, f"/{tree.name}/日本語 ファイル.bin"), str(back / "é x.bin")), server.env()
        )
    )
    assert_same_file(files[1], back / "é x.bin")


@pytest.mark.timeout(60)
def test_destination_naming(fasp_server_module, tmp_path):
    """ascp's rules: file to existing dir -> inside; to a new path -> that name; several sources -> inside."""
    server = fasp_server_module
    a, b = random_file(tmp_path / "a.bin", 5000), random_file(tmp_path / "b.bin", 7000)
    (server.docroot / "existing").mkdir(exist_ok=True)
    _ok(run_ascp(fasp_args(server, str(a), remote(server, "/existing")), server.env()))
    assert_same_file(a, server.docroot / "existing" / "a.bin")
    _ok(run_ascp(fasp_args(server, str(a), remote(server, "/renamed.bin")), server.env()))
    assert_same_file(a, server.docroot / "renamed.bin")
    _ok(run_ascp(fasp_args(server, "-d", str(a), str(b), remote(server, "/made/by/d")), server.env()))
    assert_same_file(a, server.docroot / "made" / "by" / "d" / "a.bin")
    assert_same_file(b, server.docroot / "made" / "by" / "d" / "b.bin")
    missing = run_ascp(fasp_args(server, str(a), str(b), remote(server, "/no/such/dir")), server.env())
    assert missing.returncode == 4


@pytest.mark.timeout(60)
def test_src_base_and_file_pair_list(fasp_server_module, tmp_path):
    server = fasp_server_module
    deep = random_file(tmp_path / "base" / "x" / "y" / "z.bin", 3333)
    _ok(
        run_ascp(
            fasp_args(server, "-d", f"--src-base={tmp_path / 'base'}", str(deep), remote(server, "/based")),
            server.env(),
        )
    )
    assert_same_file(deep, server.docroot / "based" / "x" / "y" / "z.bin")

    one, two = random_file(tmp_path / "one", 100), random_file(tmp_path / "two", 200)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"{one}\nfirst/renamed-one\n{two}\nsecond.bin\n")
    _ok(run_ascp(fasp_args(server, "-d", f"--file-pair-list={pairs}", remote(server, "/paired")), server.env()))
    assert_same_file(one, server.docroot / "paired" / "first" / "renamed-one")
    assert_same_file(two, server.docroot / "paired" / "second.bin")


@pytest.mark.timeout(60)
def test_options_that_change_files(fasp_server_module, tmp_path):
    """-p keeps times, -E excludes, --remove-after-transfer removes sources, -T sends in clear, -c aes256."""
    server = fasp_server_module
    tree = tmp_path / "opts"
    keep = random_file(tree / "keep.dat", 4096)
    random_file(tree / "skip.tmp", 10)
    os.utime(keep, (1_000_000_000, 1_100_000_000))
    _ok(run_ascp(fasp_args(server, "-d", "-p", "-E", "*.tmp", "-T", str(tree), remote(server, "/o1")), server.env()))
    landed = server.docroot / "o1" / "opts" / "keep.dat"
    assert_same_file(keep, landed)
    assert int(landed.stat().st_mtime) == 1_100_000_000
    assert not (server.docroot / "o1" / "opts" / "skip.tmp").exists()

    gone = random_file(tmp_path / "gone.bin", 2048)
    copy = tmp_path / "copy.bin"
    shutil.copy(gone, copy)
    _ok(
        run_ascp(
            fasp_args(server, "-c", "aes256", "--remove-after-transfer", str(gone), remote(server, "/gone.bin")),
            server.env(),
        )
    )
    assert_same_file(copy, server.docroot / "gone.bin")
    assert not gone.exists()


@pytest.mark.timeout(90)
def test_through_openssh_sshd(openssh_server, tmp_path):
    """Under a stock sshd the client runs the remote command itself (FASP_REMOTE_COMMAND)."""
    server = openssh_server
    src = random_file(tmp_path / "via-sshd.bin", 3 << 20)
    args = ["-q", "-P", str(server.port), "-i", str(server.identity)]
    _ok(run_ascp([*args, str(src), f"root@{server.host}:/"], server.env()))
    assert_same_file(src, server.docroot / "via-sshd.bin")
    back = tmp_path / "back.bin"
    _ok(run_ascp([*args, f"root@{server.host}:/via-sshd.bin", str(back)], server.env()))
    assert_same_file(src, back)
    # without FASP_REMOTE_COMMAND the client runs the installed console script `fasp-ascp --server`
    plain_env = {k: v for k, v in os.environ.items() if k != "FASP_REMOTE_COMMAND"}
    _ok(run_ascp([*args, str(src), f"root@{server.host}:/default-command.bin"], plain_env))
    assert_same_file(src, server.docroot / "default-command.bin")
    # -S names the remote engine's command line, ahead of FASP_REMOTE_COMMAND
    broken = {**plain_env, "FASP_REMOTE_COMMAND": "/nonexistent/engine"}
    command = server.env()["FASP_REMOTE_COMMAND"]
    _ok(run_ascp([*args, "-S", command, str(src), f"root@{server.host}:/by-dash-s.bin"], broken))
    assert_same_file(src, server.docroot / "by-dash-s.bin")


@pytest.mark.timeout(60)
def test_log_dirs(fasp_server_module, tmp_path):
    """-L writes the client's event log locally; -R never makes the server write where the client says
    (only into fasp-server's --log-dir, which this fixture has not: tests/security/test_server_logs.py)."""
    server = fasp_server_module
    src = random_file(tmp_path / "logged.bin", 1234)
    _ok(
        run_ascp(
            fasp_args(
                server, "-L", str(tmp_path / "logs"), "-R", "/remote-logs", str(src), remote(server, "/logged.bin")
            ),
            server.env(),
        )
    )
    assert_same_file(src, server.docroot / "logged.bin")
    local = (tmp_path / "logs" / "fasp-ascp.log").read_text()
    assert "STOP" in local and "logged.bin" in local and server.password not in local
    assert not (server.docroot / "remote-logs").exists()


@pytest.mark.timeout(60)
def test_concurrent_sessions_asking_for_the_same_udp_port(fasp_server_module, tmp_path):
    """faspmanager passes -O 33001 to every session: a busy port must not fail the second one."""
    server = fasp_server_module
    a, b = random_file(tmp_path / "ca.bin", 4 << 20), random_file(tmp_path / "cb.bin", 4 << 20)
    env = server.env()
    procs = [
        subprocess.Popen(
            [*ENGINE, *fasp_args(server, "-O", "33001", "-l", "50000", str(src), remote(server, f"/{src.name}"))],
            env=env,
            stderr=subprocess.PIPE,
        )
        for src in (a, b)
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=50)
            assert proc.returncode == 0, err.decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert_same_file(a, server.docroot / "ca.bin")
    assert_same_file(b, server.docroot / "cb.bin")


@pytest.mark.timeout(90)
def test_client_killed_under_sshd_leaves_no_server_half(openssh_server, tmp_path):
    server = openssh_server
    src = random_file(tmp_path / "big.bin", 40 << 20)
    proc = subprocess.Popen(
        [
            *ENGINE,
            "-q",
            "-P",
            str(server.port),
            "-i",
            str(server.identity),
            "-l",
            "20000",
            str(src),
            f"root@{server.host}:/big.bin",
        ],
        env=server.env(),
    )
    try:
        assert wait_until(lambda: (server.docroot / "big.bin").exists(), 30)
        assert wait_until(lambda: any(b"--server" in cmdline(p) for p in descendants(server.process.pid)), 10)
    finally:
        proc.kill()
        proc.wait()
    assert wait_until(lambda: not descendants(server.process.pid), 10)


@pytest.mark.timeout(120)
def test_names_that_are_not_utf8_land_with_the_same_bytes(fasp_server_module, tmp_path):
    """A name is bytes on Linux, not text: one that is not UTF-8 (Latin-1, a stray byte) travels in the control
    message as bytes and lands with exactly those bytes, as a lone file and inside a directory, both ways (it
    ended the session with an internal error when names had to be UTF-8)."""
    server = fasp_server_module
    latin1, stray = os.fsdecode(b"caf\xe9-\xff.bin"), os.fsdecode(b"d\xe8j\xe0")
    src = random_file(tmp_path / latin1, 3000)
    tree = tmp_path / "tree-\udcfe"  # a directory's name and its file's name alike
    random_file(tree / stray / latin1, 70_000)
    random_file(tree / "plain.bin", 10)
    _ok(run_ascp(fasp_args(server, str(src), remote(server, "/")), server.env()))
    _ok(run_ascp(fasp_args(server, str(tree), remote(server, "/")), server.env()))
    assert os.fsencode(latin1) in os.listdir(os.fsencode(server.docroot))
    assert_same_file(src, server.docroot / latin1)
    assert assert_same_tree(tree, server.docroot / tree.name) == 2

    back = tmp_path / "back"
    back.mkdir()
    for name in (latin1, tree.name):
        _ok(run_ascp(fasp_args(server, remote(server, f"/{name}"), str(back)), server.env()))
    assert sorted(os.listdir(os.fsencode(back))) == sorted([os.fsencode(latin1), os.fsencode(tree.name)])
    assert_same_file(src, back / latin1)
    assert assert_same_tree(tree, back / tree.name) == 2
