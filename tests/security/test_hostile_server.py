"""A server the client connected to lies: a download must land below its destination, nowhere else, and what an
upload costs the client must not be the server's to choose.

The attack (scp's CVE-2019-6111 and rsync's CVE-2024-12087 in our protocol): while the client downloads a
directory, the server offers a symbolic link ``x/a`` leading out of the client's destination (to the client's
``~/.ssh``, say), then a file named through it (``x/a/b``), or the same name again as a file. A real server engine
serves the bytes; :mod:`tests.security.hostile_engine` rewrites its offers (and its piece requests). The client, a
stock ``fasp-ascp``, must neither plant the link nor write through one leading out, whatever its --symbolic-links.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fasp.files.envelope import sealed_size
from tests.engine.helpers import fasp_args, remote, run_ascp
from tests.support.files import random_file, sha256
from tests.support.programs import ENGINE
from tests.support.servers import start_fasp_server

pytestmark = pytest.mark.slow

HOSTILE = str(Path(__file__).with_name("hostile_engine.py"))
VICTIM = b"ssh-ed25519 AAAA-the-users-own-key\n"


def _hostile_server(tmp_path: Path, rewrites: dict[str, dict]):
    """A fasp-server whose docroot holds x/a and x/b, its engine's offers rewritten by ``rewrites``."""
    docroot = tmp_path / "served"
    (docroot / "x").mkdir(parents=True)
    (docroot / "x" / "a").write_bytes(b"decoy\n")
    random_file(docroot / "x" / "b", 300_000)
    return start_fasp_server(
        tmp_path / "server", docroot=docroot, engine_command=[sys.executable, HOSTILE, json.dumps({"offers": rewrites})]
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """The client's own files, next to its download destination."""
    place = tmp_path / "home" / ".ssh"
    place.mkdir(parents=True)
    (place / "authorized_keys").write_bytes(VICTIM)
    return place


def _untouched(outside: Path) -> None:
    assert (outside / "authorized_keys").read_bytes() == VICTIM, "the server overwrote a file outside the destination"
    assert sorted(p.name for p in outside.iterdir()) == ["authorized_keys"], "the server wrote outside the destination"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("symlinks", ["follow", "copy"])
@pytest.mark.parametrize("spelling", ["absolute", "relative"])
@pytest.mark.parametrize("through", ["directory", "file"])
def test_a_server_cannot_write_outside_the_download_destination(tmp_path, outside, symlinks, spelling, through):
    """``x/a`` arrives as a link to the client's ~/.ssh (or to its authorized_keys), then ``x/b`` as ``x/a/b``
    (or as ``x/a`` itself): with links followed (the default: no link should come at all) and with links copied
    (a link may come, never one leading out of the destination), nothing outside the destination changes."""
    dest = tmp_path / "home" / "downloads"
    dest.mkdir()
    target = outside if through == "directory" else outside / "authorized_keys"
    link = str(target) if spelling == "absolute" else str(Path("../..", *target.relative_to(tmp_path / "home").parts))
    rewrites = {
        "x/a": {"mode": stat.S_IFLNK | 0o777, "size": 0, "link": link},
        "x/b": {"rel": "x/a/authorized_keys" if through == "directory" else "x/a"},
    }
    with _hostile_server(tmp_path, rewrites) as server:
        result = run_ascp(
            fasp_args(server, f"--symbolic-links={symlinks}", remote(server, "/x"), str(dest)), server.env()
        )
    _untouched(outside)
    landed = [p for p in dest.rglob("*") if p.is_symlink()]
    assert not any(p.resolve().is_relative_to(tmp_path / "home" / ".ssh") for p in landed), landed
    assert result.returncode != 0, "the client reported the hostile download a success"


@pytest.mark.timeout(120)
def test_links_the_client_asked_to_copy_still_land_when_they_stay_inside(tmp_path):
    """The honest case beside the attack: --symbolic-links=copy lands a relative link inside the destination
    and the file beside it, byte for byte."""
    docroot = tmp_path / "served"
    (docroot / "x").mkdir(parents=True)
    random_file(docroot / "x" / "b", 300_000)
    (docroot / "x" / "a").symlink_to("b")
    dest = tmp_path / "downloads"
    dest.mkdir()
    with start_fasp_server(tmp_path / "server", docroot=docroot) as server:
        result = run_ascp(fasp_args(server, "--symbolic-links=copy", remote(server, "/x"), str(dest)), server.env())
    assert result.returncode == 0, result.stderr
    assert (dest / "x" / "a").is_symlink() and (dest / "x" / "a").readlink() == Path("b")
    assert sha256(dest / "x" / "b") == sha256(docroot / "x" / "b")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delete_before", [False, True])
def test_a_server_cannot_delete_the_clients_files(tmp_path, delete_before):
    """The server tells the client to keep nothing below the destination itself (``keep`` with an empty top),
    as --delete-before-transfer's answer would for a directory: without that option the client deletes nothing,
    and with it, nothing outside the source's own place in the destination (``dest/x``)."""
    dest = tmp_path / "home"
    (dest / "x").mkdir(parents=True)  # (the source's place, which --delete-before-transfer prunes)
    (dest / "thesis.tex").write_bytes(VICTIM)
    keep_nothing = {"t": "keep", "arg": 0, "top": "", "names": [], "done": True}
    with _hostile_server(tmp_path, {"x": {"_before": [keep_nothing]}}) as server:
        args = ["--delete-before-transfer"] if delete_before else []
        result = run_ascp(fasp_args(server, *args, remote(server, "/x"), str(dest)), server.env())
    assert (dest / "thesis.tex").read_bytes() == VICTIM, "the server deleted the client's file"
    assert result.returncode != 0, "the client reported the hostile download a success"


def _run_measured(args: list[str], env: dict) -> tuple[int, str, int]:
    """The engine run with ``args``: its exit code, its stderr and the most memory it held (bytes resident)."""
    proc = subprocess.Popen([*ENGINE, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_maxrss * 1024


@pytest.mark.timeout(180)
def test_a_server_cannot_make_an_encrypting_upload_hold_the_file_per_request(tmp_path):
    """With --file-crypt=encrypt the client seals each piece the server asks for in memory. The server asks for the
    whole envelope of a 48 MiB file 32 more times: the client held them all (1.5 GiB; a 4 GB file asked for 4,096
    times is terabytes). A receiver of ours never asks for more than its piece, so the client refuses a longer
    one: the session ends with a protocol error (1), the client having sealed none of them. The bound leaves room
    for what an honest session holds on a busy host (62 MiB here, 338 MiB seen in CI), not for one envelope per
    request."""
    plain = 48 << 20
    src = random_file(tmp_path / "big.bin", plain)
    (tmp_path / "served").mkdir()
    rewrites = {"pieces": {"start": 0, "end": sealed_size(plain), "_copies": 32}}
    with start_fasp_server(
        tmp_path / "server",
        docroot=tmp_path / "served",
        engine_command=[sys.executable, HOSTILE, json.dumps(rewrites)],
    ) as server:
        env = {**server.env(), "ASPERA_SCP_FILEPASS": "correct horse"}
        code, err, peak = _run_measured(fasp_args(server, "--file-crypt=encrypt", str(src), remote(server, "/")), env)
    assert peak < 640 << 20, f"the client held {peak >> 20} MiB for the server's requests"
    assert code != 0 and "error 1:" in err and "piece" in err, err
