"""faspq's interface: --version, -h, --format json|table|tsv, every TransferOption reachable (named flags,
--option NAME=VALUE, --ts), --log-level; run as a real process against real workers."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.files import assert_same_file

from .support import make_file
from .test_cli_errors import _one_line_error, _upload_args, faspq

pytestmark = pytest.mark.timeout(120)


def test_version_and_short_help(faspq_env):
    assert faspq("--version").stdout.startswith("faspq, version ")
    short = faspq("-h")
    assert short.returncode == 0 and "--log-level" in short.stdout and "_FASPQ_COMPLETE" in short.stdout
    upload_help = faspq("upload", "-h").stdout
    for flag in ("--option", "--ts", "--policy", "--min-rate", "--cipher", "--overwrite", "--checksum", "--format"):
        assert flag in upload_help


@pytest.fixture
def faspq_env(faspq):
    return faspq


def test_every_option_reaches_the_engine_and_json_output(worker_factory, server, tmp_path):
    worker_factory("if", concurrency=1)
    src = tmp_path / "opts.bin"
    make_file(src, 400_000)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    spec = tmp_path / "ts.json"
    spec.write_text(json.dumps({"min_rate_kbps": 50, "preserve_modification_time": False}))
    proc = faspq(
        *_upload_args(
            server,
            str(src),
            dest="opts",
            extra=(
                "--policy",
                "fixed",
                "--rate",
                "20000",
                "--cipher",
                "aes256",
                "--overwrite",
                "always",
                "--checksum",
                "sha256",
                "--ts",
                f"@{spec}",
                "-o",
                "preserve_modification_time=true",
                "--option",
                "min_rate_kbps=100",
                "--format",
                "json",
            ),
        ),
        env={"TEST_PW": server.password},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # every stdout line is JSON
    assert events[0]["type"] == "SUBMITTED" and events[-1]["type"] == "RESULT" and events[-1]["ok"]
    init = next(e["session"] for e in events if e["type"] == "INIT")  # the engine's own account of its options
    assert (init["policy"], init["cipher"], init["min_rate"], init["target_rate"]) == ("FIXED", "aes256", 100, 20000), (
        init
    )
    dst = server.docroot / "opts" / src.name
    assert_same_file(src, dst)
    assert int(dst.stat().st_mtime) == 1_600_000_000  # --option (after --ts) preserved the time

    listing = json.loads(faspq("ls", "--all", "--format", "json").stdout)
    mine = [row for row in listing if row["id"] == events[0]["transfer_id"]]
    assert mine and mine[0]["state"] == "SUCCEEDED"
    tsv = faspq("status", events[0]["transfer_id"], "--format", "tsv").stdout.splitlines()
    assert tsv[0] == "field\tvalue" and "state\tSUCCEEDED" in tsv


def test_bad_options_are_one_line(faspq_env, tmp_path):
    src = tmp_path / "x.bin"
    make_file(src, 10)
    base = ["upload", str(src), "--host", "127.0.0.1", "--user", "u", "--password-env", "PW", "--no-watch"]
    _one_line_error(
        faspq(*base, "-o", "target_rate=5", env={"PW": "x"}),
        "unknown transfer option 'target_rate'",
        "target_rate_kbps",
    )
    for args in (["-o", "token=abc"], ["-o", "min_rate_kbps=fast"], ["--ts", "@/nonexistent.json"], ["-o", "novalue"]):
        proc = faspq(*base, *args, env={"PW": "x"})
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_log_level_debug_logs(faspq_env):
    proc = faspq("--log-level", "debug", "ls")
    assert proc.returncode == 0 and "DEBUG" in proc.stderr, proc.stderr


def test_named_profile_in_the_xdg_config(worker_factory, server, tmp_path):
    worker_factory("pr", concurrency=1)
    (tmp_path / "xdg" / "faspq").mkdir(parents=True)
    (tmp_path / "xdg" / "faspq" / "config.toml").write_text(f"""
[default]
host = "nowhere.invalid"

[lab]
host = "{server.host}"
port = {server.port}
user = "{server.user}"
password_env = "LAB_PW"
check_sshfp = "{server.host_key_fingerprint()}"
rate = 30000
option = {{ min_rate_kbps = 10 }}
""")
    src = tmp_path / "prof.bin"
    make_file(src, 200_000)
    (server.docroot / "prof").mkdir(exist_ok=True)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "LAB_PW": server.password}
    proc = faspq("--profile", "lab", "upload", str(src), "--dest", "prof", "--format", "json", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_same_file(src, server.docroot / "prof" / src.name)
    # the INIT event itself, not a line that merely mentions it (a status snapshot's ``last``, on a busy host)
    init = next(e["session"] for e in map(json.loads, proc.stdout.splitlines()) if e["type"] == "INIT")
    assert init["target_rate"] == 30000 and init["min_rate"] == 10
    _one_line_error(faspq("--profile", "nope", "upload", str(src), env=env), "no profile 'nope'", "lab")
    (tmp_path / "xdg" / "faspq" / "config.toml").write_text("[lab]\npassword = 'x'\n")
    _one_line_error(faspq("-p", "lab", "upload", str(src), env=env), "passwords do not go in the config file")
    (tmp_path / "xdg" / "faspq" / "config.toml").write_text("[lab]\nhots = 'x'\n")
    _one_line_error(faspq("-p", "lab", "upload", str(src), env=env), "unknown keys ['hots']")


def test_an_ibm_transfer_spec_through_a_worker(worker_factory, server, tmp_path):
    """--ts with a transfer spec as IBM's APIs hand it out: spec spellings (aes-256, sparse_csum, target_rate_kbps),
    its order fields named as not read (they are --host/--user here)."""
    worker_factory("ts", concurrency=1)
    src = tmp_path / "spec.bin"
    make_file(src, 300_000)
    spec = {
        "remote_host": "elsewhere.example",
        "remote_user": "nobody",
        "direction": "send",
        "target_rate_kbps": 15000,
        "min_rate_kbps": 70,
        "rate_policy": "fixed",
        "cipher": "aes-256",
        "resume_policy": "sparse_csum",
    }
    proc = faspq(
        *_upload_args(server, str(src), dest="ts", extra=("--ts", json.dumps(spec), "--format", "json")),
        env={"TEST_PW": server.password},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "direction, remote_host, remote_user not read from the transfer spec" in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    init = next(e["session"] for e in events if e["type"] == "INIT")
    assert (init["policy"], init["cipher"], init["min_rate"], init["target_rate"]) == ("FIXED", "aes256", 70, 15000), (
        init
    )
    assert_same_file(src, server.docroot / "ts" / src.name)
