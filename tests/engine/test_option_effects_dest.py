"""Destination-side and session options, each checked by its effect on disk (or in the management
events, where the effect is a report), in both directions where the option applies to both.

Layout and helpers: see test_option_effects.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess

import pytest

from fasp.files.docroot import Unconfined
from tests.engine.helpers import MgmtListener, fasp_args
from tests.engine.test_option_effects import DIRECTIONS, Ends, listing, names, ok, transfer
from tests.support.files import assert_same_file, random_file, sha256
from tests.support.programs import ENGINE

SOURCE_MTIME = 1_500_000_000


# ---- overwrite policies -------------------------------------------------------------------------------

# destination files already there (size, mtime) against sources of 3000 bytes with mtime SOURCE_MTIME;
# "identical" holds the source's own bytes
EXISTING = {
    "bigger-older": (5000, 1_000_000_000),
    "bigger-newer": (5000, 2_000_000_000),
    "same-size-older": (3000, 1_000_000_000),
    "identical": (3000, 1_000_000_000),
    "smaller-older": (1000, 1_000_000_000),
}
# which of them each policy replaces, with -k 1 (so "diff" compares sizes) unless the case says -k 3
REPLACED = {
    "never": set(),
    "always": {"bigger-older", "bigger-newer", "same-size-older", "identical"},
    "older": {"bigger-older", "same-size-older", "identical"},
    "diff": {"bigger-older", "bigger-newer"},
    "diff+older": {"bigger-older"},
    "diff -k 3": {"bigger-older", "bigger-newer", "same-size-older"},
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(REPLACED))
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_overwrite_policies(fasp_server_module, tmp_path, direction, case):
    """Each --overwrite policy replaces exactly the destination files it should and leaves the others
    byte for byte. A smaller destination file is checked under "never" only: the others resume into
    it with -k 1 (test_resume_modes)."""
    server = fasp_server_module
    policy, _, k = case.partition(" -k ")
    ends = Ends(server, tmp_path, direction)
    wanted = EXISTING if policy == "never" else {k: v for k, v in EXISTING.items() if k != "smaller-older"}
    before = {}
    for name, (size, mtime) in wanted.items():
        src = random_file(ends.src / "ow" / name, 3000)
        os.utime(src, (SOURCE_MTIME, SOURCE_MTIME))
        old = random_file(ends.dst / "ow" / name, size)
        if name == "identical":
            old.write_bytes(src.read_bytes())
        os.utime(old, (mtime, mtime))
        before[name] = sha256(old)
    mgr = ok(server, f"--overwrite={policy}", "-k", k or "1", *ends.args("ow"))
    for name in wanted:
        if name in REPLACED[case]:
            assert_same_file(ends.src / "ow" / name, ends.dst / "ow" / name)
            assert int((ends.dst / "ow" / name).stat().st_mtime) != EXISTING[name][1], name  # rewritten
        else:
            assert sha256(ends.dst / "ow" / name) == before[name], name
            assert int((ends.dst / "ow" / name).stat().st_mtime) == EXISTING[name][1], name  # untouched
    assert sorted(names(mgr, "STOP")) == sorted(REPLACED[case])
    assert sorted(names(mgr, "SKIP")) == sorted(set(wanted) - REPLACED[case])


def test_never_and_older_protect_a_shorter_file_without_our_sidecar():
    """The rule behind the "smaller-older" case: a shorter destination file is resumed into only if our
    own sidecar says it is an unfinished transfer; otherwise "never" and "older" apply to it. An empty one
    (an interrupted session opened it) is no complete copy: sent, whatever the policy."""
    from fasp.files.resume import Existing, Plan, plan

    shorter = Existing(1000, 2_000_000_000.0)
    common = dict(size=3000, mtime=float(SOURCE_MTIME), resume=1, final=shorter, partial=shorter)
    assert plan(overwrite="never", watermark=None, **common).action == "skip"
    assert plan(overwrite="older", watermark=None, **common).action == "skip"
    assert plan(overwrite="never", watermark=1000, **common).start == 1000  # ours: resumed
    assert plan(overwrite="older", watermark=800, **common).start == 800
    assert plan(overwrite="diff", watermark=None, **common).start == 1000  # -k 1 trusts the size
    empty = Existing(0, 2_000_000_000.0)  # what an interrupted session leaves of a file it only opened
    for overwrite in ("never", "older"):
        for watermark in (0, None):  # a sidecar at 0, or none (a one-piece file)
            assert plan(**{**common, "final": empty, "partial": empty}, overwrite=overwrite, watermark=watermark) == (
                Plan("send", 0)
            )


# ---- --save-before-overwrite ----------------------------------------------------------------------------

STAMP = r"\.\d{4}\.\d{2}\.\d{2}\.\d{2}\.\d{2}\.\d{2}\.1"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_save_before_overwrite_keeps_a_dated_copy(fasp_server_module, tmp_path, direction):
    """The file about to be overwritten is renamed NAME.yyyy.mm.dd.hh.mm.ss.1.EXT (IBM's form: the stamp
    goes before the extension) with its bytes and times; without the option nothing is kept."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    sources = [random_file(ends.src / "sb" / name, 20_000) for name in ("report.txt", "noext", "a.tar.gz")]
    for src in sources:
        old = ends.dst / "sb" / src.name
        old.parent.mkdir(exist_ok=True)
        old.write_bytes(b"old " + src.name.encode())
        os.utime(old, (1_000_000_000, 1_000_000_000))
    ok(server, "--overwrite=always", "--save-before-overwrite", *ends.args("sb"))
    patterns = {"report.txt": rf"report{STAMP}\.txt", "noext": rf"noext{STAMP}", "a.tar.gz": rf"a\.tar{STAMP}\.gz"}
    out = ends.dst / "sb"
    for src in sources:
        assert_same_file(src, out / src.name)
        [saved] = [p for p in out.iterdir() if re.fullmatch(patterns[src.name], p.name)]
        assert saved.read_bytes() == b"old " + src.name.encode()
        assert int(saved.stat().st_mtime) == 1_000_000_000
    assert len(list(out.iterdir())) == 6
    ok(server, "--overwrite=always", *ends.args("sb"))
    assert len(list(out.iterdir())) == 6


def test_saved_names_count_within_a_second(tmp_path, monkeypatch):
    """The index counts from 1 for each name saved in the same second."""
    from fasp.session import receiving

    monkeypatch.setattr(receiving.time, "strftime", lambda fmt, *t: "2026.01.02.03.04.05")
    target = str(tmp_path / "same.log")
    for index in (1, 2, 3):
        saved = receiving._saved_name(Unconfined(), target)
        assert saved == str(tmp_path / f"same.2026.01.02.03.04.05.{index}.log")
        open(saved, "w").close()


# ---- partial files, -d, resume ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_partial_file_suffix_on_download(fasp_server_module, tmp_path):
    """A local NAME.partial is resumed into and renamed to NAME once complete (upload: test_file_options)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, "download")
    src = random_file(ends.src / "big.bin", 2 << 20)
    (ends.dst / "big.bin.partial").write_bytes(src.read_bytes()[: 1 << 20])
    mgr = ok(server, "--partial-file-suffix=.partial", "-k", "1", *ends.args("big.bin"))
    assert_same_file(src, ends.dst / "big.bin")
    assert listing(ends.dst) == ["big.bin"]  # neither the partial nor its resume sidecar is left
    assert mgr.of("START")[0].int("StartByte") == 1 << 20
    assert mgr.of("DONE")[0].int("TransferBytes") == 1 << 20


@pytest.mark.timeout(60)
def test_create_dirs_on_download(fasp_server_module, tmp_path):
    """-d makes a missing local destination directory; without it the download fails with 4 and
    creates nothing (upload: test_transfer.test_destination_naming)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, "download")
    a, b = random_file(ends.src / "a.bin", 1000), random_file(ends.src / "b.bin", 2000)
    target = ends.dst / "made" / "by" / "d"
    code, err, mgr = transfer(server, *ends.args("a.bin", "b.bin", dest=target))
    assert code == 4, err
    assert listing(ends.dst) == []
    ok(server, "-d", *ends.args("a.bin", "b.bin", dest=target))
    assert_same_file(a, target / "a.bin")
    assert_same_file(b, target / "b.bin")


RESUME_SIZE, PREFIX = 3 << 20, 5 << 19  # a 3 MiB source, 2.5 MiB of it already at the destination
# -k 2 digests 32 samples of 64 KiB, evenly spaced, plus the last 64 KiB before the prefix end: a byte
# flipped at the very end is seen by -k 2 and -k 3, one between two samples by -k 3 only.
FLIPS = {"good": None, "endflip": PREFIX - 1, "midflip": 5 * (PREFIX // 32) + 70_000}
# (restarted from 0, correct at the end) per file, for each -k
RESUMED = {
    0: {"good": (True, True), "endflip": (True, True), "midflip": (True, True)},
    1: {"good": (False, True), "endflip": (False, False), "midflip": (False, False)},
    2: {"good": (False, True), "endflip": (True, True), "midflip": (False, False)},
    3: {"good": (False, True), "endflip": (True, True), "midflip": (True, True)},
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("k", list(RESUMED))
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_resume_modes(fasp_server_module, tmp_path, direction, k):
    """-k 0 resends everything; -k 1 trusts size alone; -k 2 checks samples of the prefix; -k 3 all of it.
    What each mode resends shows in START StartByte and DONE TransferBytes, what it missed on disk."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    moved = 0
    for name, flip in FLIPS.items():
        src = random_file(ends.src / "rk" / f"{name}.bin", RESUME_SIZE)
        prefix = bytearray(src.read_bytes()[:PREFIX])
        if flip is not None:
            prefix[flip] ^= 0xFF
        (ends.dst / "rk").mkdir(exist_ok=True)
        (ends.dst / "rk" / f"{name}.bin").write_bytes(prefix)
        restarted = RESUMED[k][name][0]
        moved += RESUME_SIZE if restarted else RESUME_SIZE - PREFIX
    mgr = ok(server, "-k", str(k), *ends.args("rk"))
    starts = {n.removesuffix(".bin"): f.int("StartByte") for n, f in names(mgr, "START").items()}
    assert starts == {name: 0 if RESUMED[k][name][0] else PREFIX for name in FLIPS}
    for name in FLIPS:
        same = sha256(ends.src / "rk" / f"{name}.bin") == sha256(ends.dst / "rk" / f"{name}.bin")
        assert same == RESUMED[k][name][1], name
    assert mgr.of("DONE")[0].int("TransferBytes") == moved


# ---- reports: checksums, job size, manifest, logs, -e ---------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction, algorithm", [("download", "md5"), ("download", "sha512"), ("upload", "sha1")])
def test_file_checksum_reports_the_destination_digest(fasp_server_module, tmp_path, direction, algorithm):
    """Each STOP carries the digest of the file as it landed (upload sha256: test_management)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    files = [random_file(ends.src / "ck" / f"{i}.bin", size) for i, size in enumerate((0, 777, 1 << 20))]
    mgr = ok(server, f"--file-checksum={algorithm}", *ends.args("ck"))
    stops = names(mgr, "STOP")
    assert sorted(stops) == sorted(f.name for f in files)
    for f in files:
        assert stops[f.name].get("FileChecksumType") == algorithm
        landed = (ends.dst / "ck" / f.name).read_bytes()
        assert stops[f.name].get("FileChecksum") == hashlib.new(algorithm, landed).hexdigest()
    plain = ok(server, *ends.args("ck"))
    assert all(f.get("FileChecksum") is None for f in plain.of("STOP"))


@pytest.mark.timeout(60)
def test_precalculate_job_size_on_download(fasp_server_module, tmp_path):
    """The server's totals for the whole job come before any file starts (upload: test_management)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, "download")
    sizes = (100, 2000, 30_000)
    for i, size in enumerate(sizes):
        random_file(ends.src / "job" / f"d{i}" / f"f{i}.bin", size)
    random_file(ends.src / "solo.bin", 5000)  # a second source argument: its listing comes later
    mgr = ok(server, "--precalculate-job-size", *ends.args("job", "solo.bin"))
    [note] = [f for f in mgr.of("NOTIFICATION") if f.get("PreTransferFiles") is not None]
    assert (note.int("PreTransferFiles"), note.int("PreTransferBytes"), note.int("PreTransferDirs")) == (
        4,
        sum(sizes) + 5000,
        4,
    )
    assert len(mgr.of("STOP")) == 4
    types = mgr.types()
    assert types.index("NOTIFICATION") < types.index("START")
    plain = ok(server, *ends.args("job"))
    assert not [f for f in plain.of("NOTIFICATION") if f.get("PreTransferFiles") is not None]


def _manifest_lines(directory) -> list[list[str]]:
    [manifest] = list(directory.iterdir())
    assert re.fullmatch(r"aspera-transfer-[0-9a-f]{32}-manifest\.txt", manifest.name)
    return [line.split("\t") for line in manifest.read_text().splitlines()]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_file_manifest_says_each_files_outcome(fasp_server_module, tmp_path, direction):
    """--file-manifest=text: one line per file, OUTCOME<TAB>PATH[<TAB>DETAIL], passed, skipped and failed
    alike, written even when the session ends with 27; none without the option."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    sent = random_file(ends.src / "mf" / "sent.bin", 4000)
    random_file(ends.src / "mf" / "left.tmp", 10)
    random_file(ends.src / "mf" / "kept.bin", 10)
    random_file(ends.dst / "mf" / "kept.bin", 20)
    tabbed = random_file(ends.src / "mf" / "tab\there.bin", 30)  # a tab in a name is written as \t
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    code, err, _ = transfer(
        server,
        "--file-manifest=text",
        f"--file-manifest-path={manifests}",
        "--overwrite=never",
        "-E",
        "*.tmp",
        *ends.args("mf", "missing.bin"),
    )
    assert code == 27, err
    assert_same_file(sent, ends.dst / "mf" / "sent.bin")
    lines = {os.path.basename(fields[1]): fields for fields in _manifest_lines(manifests)}
    assert {name: fields[0] for name, fields in lines.items()} == {
        "sent.bin": "passed",
        "left.tmp": "skipped",
        "kept.bin": "skipped",
        "missing.bin": "failed",
        "tab\\there.bin": "passed",
    }
    assert_same_file(tabbed, ends.dst / "mf" / tabbed.name)
    assert len(lines["sent.bin"]) == 2 and "pattern" in lines["left.tmp"][2]
    assert lines["missing.bin"][2].startswith("4 ")
    ok(server, "--overwrite=never", *ends.args("mf"))
    assert len(list(manifests.iterdir())) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_file_manifest_of_a_cancelled_session(fasp_server_module, tmp_path, direction):
    """A session that ends early (here CANCEL, 28) still writes its manifest: the files done by then
    as they ended, the one in flight as failed with the session's error."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, direction)
    first = random_file(ends.src / "mc" / "a-first.bin", 5000)
    random_file(ends.src / "mc" / "b-slow.bin", 40 << 20)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    mgr = MgmtListener()
    proc = subprocess.Popen(
        [
            *ENGINE,
            *fasp_args(
                server,
                "-M",
                str(mgr.port),
                "-l",
                "20000",
                "--file-manifest=text",
                f"--file-manifest-path={manifests}",
                *ends.args("mc"),
            ),
        ],
        env=server.env(),
        stderr=subprocess.PIPE,
    )
    try:
        for event, name in (("STOP", "a-first"), ("START", "b-slow")):
            assert mgr.wait_for(lambda f, event=event, name=name: f.type == event and name in f.get("File", ""), 30), (
                mgr.types()
            )
        mgr.send("CANCEL")
        assert proc.wait(30) == 28, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        mgr.close()
    assert_same_file(first, ends.dst / "mc" / "a-first.bin")
    lines = {os.path.basename(fields[1]): fields for fields in _manifest_lines(manifests)}
    assert lines["a-first.bin"] == ["passed", lines["a-first.bin"][1]]
    assert lines["b-slow.bin"][0] == "failed" and lines["b-slow.bin"][2].startswith("28 ")


@pytest.mark.timeout(60)
def test_log_dirs_on_download(fasp_server_module, tmp_path):
    """-L and -R on a download (upload: test_transfer.test_log_dirs)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, "download")
    src = random_file(ends.src / "logged-down.bin", 1234)
    remote_logs = ends.remote_side / "rlogs"
    ok(server, "-L", str(tmp_path / "llogs"), "-R", ends.client_path(remote_logs), *ends.args("logged-down.bin"))
    assert_same_file(src, ends.dst / "logged-down.bin")
    local = (tmp_path / "llogs" / "fasp-ascp.log").read_text()
    assert "STOP" in local and str(ends.dst / "logged-down.bin") in local and server.password not in local
    assert not remote_logs.exists()  # -R goes only to fasp-server's --log-dir (tests/security/test_server_logs.py)


@pytest.mark.timeout(60)
def test_pre_post_program_on_download(fasp_server_module, tmp_path):
    """-e on a download: one File run per landed file (named where it landed), ERROR for a missing
    source, Session Stop ERROR 27 (upload: test_file_options.test_pre_post_program)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, "download")
    record = tmp_path / "calls.txt"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$TYPE $STARTSTOP ${{STATUS:-}} ${{ERRCODE:-}} ${{FILE:-}}" >> {record}\n')
    hook.chmod(0o755)
    for name in ("a.bin", "b.bin"):
        random_file(ends.src / "pp" / name, 100)
    code, err, _ = transfer(server, "-e", str(hook), *ends.args("pp", "gone.bin"))
    assert code == 27, err
    lines = record.read_text().splitlines()
    assert lines[0] == "Session Start   " and lines[-1] == "Session Stop ERROR 27 "
    assert sorted(line for line in lines if line.startswith("File Stop OK")) == [
        f"File Stop OK  {ends.dst / 'pp' / n}" for n in ("a.bin", "b.bin")
    ]
    [failed] = [line for line in lines if line.startswith("File Stop ERROR")]
    assert failed.startswith("File Stop ERROR 4 ") and failed.endswith("gone.bin")


@pytest.mark.timeout(90)
def test_two_nodes_share_one_download(fasp_server_module, tmp_path):
    """-C 1:2 and -C 2:2 downloading at once: a file above --multi-session-threshold is written in two
    ranges by two processes and lands intact; the small files are shared (upload: test_file_options)."""
    server = fasp_server_module
    ends = Ends(server, tmp_path, "download")
    tree = ends.src / "shared"
    for i in range(6):
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
                    *ends.args("shared"),
                ),
            ],
            env=server.env(),
            stderr=subprocess.PIPE,
        )
        for node, mgr in zip((1, 2), listeners)
    ]
    try:
        assert [p.wait(60) for p in procs] == [0, 0], [p.stderr.read().decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        for mgr in listeners:
            mgr.close()
    assert listing(ends.dst / "shared") == sorted(p.name for p in tree.iterdir())
    for f in tree.iterdir():
        assert_same_file(f, ends.dst / "shared" / f.name)
    moved = [mgr.of("DONE")[0].int("TransferBytes") for mgr in listeners]
    assert sum(moved) == sum(f.stat().st_size for f in tree.iterdir())
    assert all(m > big.stat().st_size // 3 for m in moved)
    assert (
        ends.dst / "shared" / "big.bin"
    ).stat().st_mtime_ns == big.stat().st_mtime_ns  # the last range leaves it right
    assert all("big.bin" in names(mgr, "STOP") for mgr in listeners)  # each node wrote a range of it
