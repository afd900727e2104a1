"""Resume after a crash: kill -9 the client halfway, rerun with -k 2, only the remainder travels."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.engine.helpers import fasp_args, remote, server_mode_pids
from tests.engine.test_option_effects import DIRECTIONS, Ends, names, ok
from tests.support.files import assert_same_file, random_file
from tests.support.wait import wait_until


@pytest.mark.timeout(120)
def test_kill_client_then_resume_sends_only_the_remainder(fasp_server, tmp_path, listener, spawn):
    server = fasp_server
    size = 96 << 20
    src = random_file(tmp_path / "resume.bin", size)
    partial = server.docroot / "resume.bin"
    first = spawn(
        ["-q", "-P", str(server.port), "-l", "150000", "-k", "2", str(src), remote(server, "/resume.bin")], server.env()
    )
    assert wait_until(lambda: partial.exists() and partial.stat().st_blocks * 512 > size // 3, 60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    # the server half ends with its channel; what it wrote is all the destination has
    assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 10)
    on_disk = partial.stat().st_blocks * 512
    assert size // 3 < on_disk < size
    remainder = size - on_disk

    second = spawn(
        ["-q", "-P", str(server.port), "-M", str(listener.port), "-k", "2", str(src), remote(server, "/resume.bin")],
        server.env(),
    )
    second.wait(60)
    assert second.returncode == 0, second.stderr.read().decode()
    assert_same_file(src, partial)
    start = listener.of("START")[0]
    assert start.int("StartByte") > 0
    sent = listener.of("DONE")[0].int("TransferBytes")
    assert sent <= remainder * 1.05, (sent, remainder)


@pytest.mark.timeout(120)
def test_the_watermark_advances_in_place(fasp_server, tmp_path, spawn):
    """Each landed piece rewrites the sidecar's one record in place (a pwrite; no file created and renamed per
    piece, which cost the receiver a seventh of its CPU at 500 Mbit/s): while a file arrives its sidecar keeps
    one inode and its watermark only grows; once the file is whole the sidecar is gone."""
    server = fasp_server
    size = 48 << 20
    src = random_file(tmp_path / "mark.bin", size)
    sidecar = server.docroot / ".mark.bin.fasp-resume"
    proc = spawn(
        ["-q", "-P", str(server.port), "-l", "100000", "-k", "2", str(src), remote(server, "/mark.bin")], server.env()
    )
    seen: list[tuple[int, int]] = []  # (inode, watermark)

    def sample() -> bool:
        try:
            inode, have = sidecar.stat().st_ino, json.loads(sidecar.read_bytes())["have"]
        except (FileNotFoundError, ValueError):  # not yet, already gone, or read while being written
            return False
        seen.append((inode, have))
        return len({have for _, have in seen}) >= 4

    assert wait_until(sample, 60, step=0.02), seen
    proc.wait(60)
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert_same_file(src, server.docroot / "mark.bin")
    assert not sidecar.exists()
    assert len({inode for inode, _ in seen}) == 1, seen
    marks = [have for _, have in seen]
    assert marks == sorted(marks) and 0 < marks[-1] < size, marks


def watermarks(directory: Path) -> list[int]:
    """The watermarks of the sidecars in ``directory`` that can be read now."""
    marks = []
    for sidecar in directory.glob(".*.fasp-resume"):
        try:
            marks.append(json.loads(sidecar.read_bytes())["have"])
        except (FileNotFoundError, ValueError):  # gone, or read while being written
            pass
    return marks


def interrupted(server, spawn, ends: Ends, tree: str, *args: str, env: dict | None = None) -> dict[str, int]:
    """Send ``tree`` slowly and SIGTERM the client (a user's Ctrl-C) once a sidecar says a piece of a file
    landed; the sizes the destination files were left at (once the server's engine is gone too)."""
    landed = ends.dst / tree
    first = spawn(fasp_args(server, "-l", "3000", "--policy=fixed", *args, *ends.args(tree)), env or server.env())
    assert wait_until(lambda: any(have > 0 for have in watermarks(landed)), 60)
    first.send_signal(signal.SIGTERM)
    first.wait(20)
    assert wait_until(lambda: not server_mode_pids(str(server.docroot)), 10)
    return {p.name: p.stat().st_size for p in landed.iterdir() if not p.name.startswith(".")}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_never_resumes_what_an_interrupted_transfer_left(fasp_server_module, tmp_path, spawn, direction):
    """A file the interrupted session had only opened is 0 bytes at its final name, with a sidecar of
    watermark 0: ours and unfinished, so -k 1 --overwrite=never sends it, never skips it as complete."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    sources = [random_file(ends.src / "tree" / f"f{i}", 1_500_000) for i in range(6)]
    left = interrupted(server, spawn, ends, "tree")
    assert 0 in left.values() and any(0 < n < 1_500_000 for n in left.values()), left
    mgr = ok(server, "--overwrite=never", "-k", "1", *ends.args("tree"))
    for src in sources:
        assert_same_file(src, ends.dst / "tree" / src.name)
    assert not names(mgr, "SKIP")


@pytest.mark.timeout(120)
def test_an_interrupted_sealed_upload_resumes_to_an_envelope_that_opens(fasp_server_module, tmp_path, spawn):
    """Each session seals under a fresh header (salt, key, nonces): what an interrupted one stored cannot be the
    prefix of the next one's envelope, so -k 1 must not keep it; the stored envelope decrypts to the source."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, "upload")
    src = random_file(ends.src / "sealed" / "big.bin", 3_000_000)
    env = {**server.env(), "ASPERA_SCP_FILEPASS": "correct horse"}
    left = interrupted(server, spawn, ends, "sealed", "-k", "1", "--file-crypt=encrypt", env=env)
    assert 0 < left["big.bin.aspera-env"] < 3_000_000, left
    mgr = ok(server, "-k", "1", "--file-crypt=encrypt", *ends.args("sealed"), env=env)
    assert mgr.of("START")[0].int("StartByte") == 0  # sent whole again: its prefix is under another key
    back = tmp_path / "back"
    back.mkdir()
    stored = ends.client_path(ends.dst / "sealed" / "big.bin.aspera-env")
    ok(server, "--file-crypt=decrypt", remote(server, stored), str(back), env=env)
    assert_same_file(src, back / "big.bin")
