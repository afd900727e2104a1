"""A queue worker's engines reach local files only beneath the directories its policy allows.

The worker checks an order's paths when it arrives (config/policy.py); whoever can write into an allowed
directory can still plant a link afterwards, while the transfer runs. So the worker also starts its
engines with FASP_SEND_ROOTS / FASP_RECV_ROOTS, and the engine resolves every local path beneath the
root that holds it, through the same handle as a server's docroot: a link that leaves is error 41 when
it is followed, whenever it was made. Each test plants the link the way that attacker would and checks
that the victim neither left (upload) nor changed (download), and that what stays inside still works.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from faspmanager.codes import ErrorCode
from tests.engine.helpers import MgmtListener, fasp_args, remote, run_ascp
from tests.support.files import assert_same_file, random_file
from tests.support.servers import fasp_server  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECRET = b"the worker's shared key\n" * 4


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def resolver(request, monkeypatch) -> str:
    """Both resolvers of the handle (the engine inherits the variable)."""
    if request.param == "walk":
        monkeypatch.setenv("FASP_NO_OPENAT2", "1")
    else:
        monkeypatch.delenv("FASP_NO_OPENAT2", raising=False)
    return request.param


@pytest.fixture
def site(tmp_path) -> dict[str, Path]:
    dirs = {name: tmp_path / name for name in ("read", "write", "elsewhere")}
    for path in dirs.values():
        path.mkdir()
    (dirs["elsewhere"] / "shared.key").write_bytes(SECRET)
    return dirs


def _env(server, site, **roots: str) -> dict[str, str]:
    return {**server.env(), **roots}


def _file_errors(server, env, *args: str) -> tuple[int, dict[str, int], str]:
    mgr = MgmtListener()
    try:
        result = run_ascp(fasp_args(server, "-M", str(mgr.port), *args), env)
        mgr.wait_for(lambda frame: frame.type == "DONE" or frame.type == "ERROR" and frame.get("File") is None)
    finally:
        mgr.close()
    codes = {frame.get("File").rsplit("/", 1)[-1]: frame.int("Code") for frame in mgr.of("FILEERROR")}
    return result.returncode, codes, result.stderr.decode(errors="replace")


def test_upload_never_reads_through_a_link_planted_in_a_readable_directory(fasp_server, site):  # noqa: F811
    """The outbox holds a file, a link inside and one planted to the worker's key: the key is refused (41),
    the rest arrives."""
    server = fasp_server
    tree = site["read"] / "outbox"
    data = random_file(tree / "data.bin", 200_000)
    (tree / "inside").symlink_to("data.bin")
    (tree / "key").symlink_to(site["elsewhere"] / "shared.key")
    env = _env(server, site, FASP_SEND_ROOTS=f"{site['read']}{os.pathsep}{site['write']}")
    code, errors, err = _file_errors(server, env, "-d", str(tree), remote(server, "/in"))
    assert code == ErrorCode.SOME_FILE_ERRS and errors == {"key": ErrorCode.BAD_PATH}, (code, errors, err)
    assert not (server.docroot / "in" / "outbox" / "key").exists()
    assert_same_file(data, server.docroot / "in" / "outbox" / "data.bin")
    assert_same_file(data, server.docroot / "in" / "outbox" / "inside")
    direct = run_ascp(fasp_args(server, str(site["elsewhere"] / "shared.key"), remote(server, "/k")), env)
    assert direct.returncode == ErrorCode.BAD_PATH and not (server.docroot / "k").exists(), direct.stderr
    assert b"outside the allowed local directories" in direct.stderr


def test_download_never_writes_through_a_link_planted_in_a_writable_directory(fasp_server, site):  # noqa: F811
    """The inbox's subdirectory is swapped for a link to elsewhere: the download into it is refused and the
    victim keeps its bytes; a download beside it, and the manifest, land."""
    server = fasp_server
    good = random_file(server.docroot / "remote" / "sub" / "shared.key", 3000)
    inbox = site["write"] / "inbox"
    inbox.mkdir()
    (inbox / "sub").symlink_to(site["elsewhere"])
    env = _env(server, site, FASP_RECV_ROOTS=str(site["write"]))
    through = run_ascp(fasp_args(server, remote(server, "/remote/sub/shared.key"), str(inbox / "sub")), env)
    assert through.returncode == ErrorCode.BAD_PATH, through.stderr
    assert (site["elsewhere"] / "shared.key").read_bytes() == SECRET
    assert list(site["elsewhere"].iterdir()) == [site["elsewhere"] / "shared.key"]
    landed = run_ascp(
        fasp_args(
            server, "--file-manifest=text", f"--file-manifest-path={inbox}", remote(server, "/remote"), str(inbox)
        ),
        env,
    )
    assert landed.returncode == 0, landed.stderr
    assert_same_file(good, inbox / "remote" / "sub" / "shared.key")
    assert len(list(inbox.glob("aspera-transfer-*-manifest.txt"))) == 1
    outside = run_ascp(fasp_args(server, remote(server, "/remote"), str(site["elsewhere"] / "new")), env)
    assert outside.returncode == ErrorCode.BAD_PATH and not (site["elsewhere"] / "new").exists(), outside.stderr


def test_a_roots_confined_engine_refuses_a_local_docroot_as_well(fasp_server, site):  # noqa: F811
    server = fasp_server
    env = {**_env(server, site, FASP_SEND_ROOTS=str(site["read"])), "FASP_LOCAL_DOCROOT": str(site["read"])}
    result = run_ascp(fasp_args(server, "--apply-local-docroot", "/x", remote(server, "/x")), env)
    assert result.returncode == ErrorCode.USAGE and b"FASP_SEND_ROOTS" in result.stderr, result.stderr
