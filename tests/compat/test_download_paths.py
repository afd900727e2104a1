"""Downloads through faspmanager land where the caller means: an absolute ``dest_paths`` entry is that path,
a relative one is under ``destination_root``, else under the working directory. Before, ``/data/in/big.bin``
landed in ``./data/in/big.bin`` under the caller's working directory."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import faspmanager as fm
from tests.support.files import assert_same_file, random_file
from tests.support.ports import free_port
from tests.support.programs import engine_program

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def engine(tmp_path) -> Path:
    return engine_program(tmp_path)


def _download(server, engine, sources, dests, **options):
    order = fm.FileDownload(
        sources,
        server.user,
        server.host,
        dest_paths=dests,
        source_pass=server.password,
        options=fm.TransferOptions(tcp_port=server.port, udp_port=free_port(socket.SOCK_DGRAM), **options),
    )
    with fm.session(order, ascp_path=str(engine)) as s:
        s.start()
        result = s.finish()
    assert result.ok(), result.reason()


def test_absolute_relative_and_rooted_destinations(fasp_server_module, engine, tmp_path, monkeypatch):
    server = fasp_server_module
    big = random_file(server.docroot / "big.bin", 3 << 20)
    small = random_file(server.docroot / "small.bin", 5000)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    absolute = tmp_path / "data" / "in" / "big.bin"
    _download(server, engine, "/big.bin", str(absolute))
    assert_same_file(big, absolute)
    assert list(cwd.iterdir()) == []  # nothing under the working directory

    # relative: under the working directory, and mixed with an absolute one in the same order
    elsewhere = tmp_path / "elsewhere" / "small.bin"
    _download(server, engine, ["/big.bin", "/small.bin"], ["rel/big.bin", str(elsewhere)])
    assert_same_file(big, cwd / "rel" / "big.bin")
    assert_same_file(small, elsewhere)

    # relative with destination_root: under the root; absolute still absolute
    root = tmp_path / "root"
    root.mkdir()
    again = tmp_path / "abs2" / "small.bin"
    _download(server, engine, ["/big.bin", "/small.bin"], ["sub/big.bin", str(again)], destination_root=str(root))
    assert_same_file(big, root / "sub" / "big.bin")
    assert_same_file(small, again)
    assert sorted(os.listdir(cwd)) == ["rel"]


def test_the_argv_faspmanager_builds(tmp_path):
    """The order's command line: DEST becomes / and the pair list holds the full paths (checked without a run,
    so a change of spelling is seen here first)."""
    order = fm.FileDownload(
        ["/a", "/b"],
        "u",
        "h",
        dest_paths=["/x/a", "y/b"],
        source_pass="p",
        options=fm.TransferOptions(destination_root="/r"),
    )
    args = order.ascp_opts()
    assert args[-1] == "/"
    listing = Path(args[-2].removeprefix("--file-pair-list=")).read_text().splitlines()
    assert listing == ["/a", "x/a", "/b", "r/y/b"]


def test_faspq_style_upload_to_a_new_root_makes_a_directory(fasp_server_module, engine, tmp_path):
    """What ``faspq upload --dest /incoming big.bin`` orders (create_dirs=True, one file): /incoming is a
    directory holding big.bin, and a second upload to /incoming/ lands next to it (it made a file before)."""
    server = fasp_server_module
    big, other = random_file(tmp_path / "big.bin", 1 << 20), random_file(tmp_path / "other.bin", 4000)
    for source, root in ((big, "/incoming-q"), (other, "/incoming-q/")):
        order = fm.FileUpload(
            str(source),
            server.user,
            server.host,
            dest_pass=server.password,
            options=fm.TransferOptions(
                tcp_port=server.port, udp_port=free_port(socket.SOCK_DGRAM), destination_root=root, create_dirs=True
            ),
        )
        with fm.session(order, ascp_path=str(engine)) as s:
            s.start()
            result = s.finish()
        assert result.ok(), result.reason()
    assert sorted(p.name for p in (server.docroot / "incoming-q").iterdir()) == ["big.bin", "other.bin"]
    assert_same_file(big, server.docroot / "incoming-q" / "big.bin")
    assert_same_file(other, server.docroot / "incoming-q" / "other.bin")
