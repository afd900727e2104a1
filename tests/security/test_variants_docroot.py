"""Red-team variants of issue 10: ways around the docroot the first round's tests did not try.

Stock ``fasp-ascp`` against a real fasp-server, as an authenticated user would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.engine.helpers import fasp_args, remote, run_ascp
from tests.support.files import assert_same_file, random_file

pytestmark = pytest.mark.timeout(120)


def _escapes(docroot: Path) -> list[str]:
    """Every link in the docroot whose target, read where the link is, leaves it."""
    root = os.path.realpath(docroot)
    bad = []
    for path in docroot.rglob("*"):
        if path.is_symlink():
            where = os.path.normpath(os.path.join(path.parent, os.readlink(path)))
            if os.path.commonpath([root, os.path.realpath(where)]) != root:
                bad.append(f"{path.relative_to(docroot)} -> {os.readlink(path)}")
    return bad


def test_link_moved_by_move_after_transfer_never_points_outside(fasp_server, tmp_path):
    """A link that stays inside where it was made (d/x -> ..) is moved one level up by the server
    itself (a download with --move-after-transfer=/): there it would lead out of the docroot."""
    server = fasp_server
    kit = tmp_path / "kit" / "d"
    kit.mkdir(parents=True)
    (kit / "x").symlink_to("..")
    payload = random_file(kit / "data.bin", 50_000)
    made = run_ascp(fasp_args(server, "--symbolic-links=copy", str(kit), remote(server, "/")), server.env())
    assert made.returncode == 0, made.stderr
    assert os.readlink(server.docroot / "d" / "x") == ".."  # allowed: it leads to the docroot itself
    assert_same_file(payload, server.docroot / "d" / "data.bin")
    back = tmp_path / "back"
    back.mkdir()
    moved = run_ascp(
        fasp_args(
            server, "--mode=recv", "--symbolic-links=copy", "--move-after-transfer=/", remote(server, "/d/x"), str(back)
        ),
        server.env(),
    )
    assert _escapes(server.docroot) == [], f"a link now leads out of the docroot ({moved.stderr!r})"
