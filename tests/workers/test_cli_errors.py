"""faspq as a new user meets it, run as a real process: expected failures are one line and a non-zero status,
steering says what it did, local paths resolve where faspq runs, a queue nobody consumes is named, and piped
progress is live and does not wrap."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import faspmanager as fm
from tasks.client import TransferHandle, submit
from tasks.store.events import EventLog
from tasks.store.keys import Keys
from tests.support.files import assert_same_file
from tests.support.ports import free_port
from tests.support.programs import REPO_ROOT
from tests.support.wait import wait_until

from .conftest import SECRET_KEY
from .support import make_file, options

pytestmark = pytest.mark.timeout(120)


def faspq(*args, env=None, cwd=None, timeout=60) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    environ = {k: v for k, v in environ.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", "tasks.cli", *args],
        cwd=cwd or REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(proc, *words):
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_redis_unreachable_is_one_line_with_the_password_hidden(faspq_env_only):
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    for args in (["status", "x"], ["rate", "x", "100"], ["cancel", "x"], ["ls"], ["watch", "x"]):
        line = _one_line_error(
            faspq(*args, env={"FASPQ_REDIS_URL": url}), "cannot reach Redis at", "redis://:***@127.0.0.1"
        )
        assert "hunter2" not in line


def test_key_missing_malformed_or_unreadable(faspq_env_only, tmp_path):
    src = tmp_path / "k.bin"
    make_file(src, 10)
    upload = ["upload", str(src), "--host", "127.0.0.1", "--user", "u", "--password-env", "PW", "--no-watch"]
    _one_line_error(faspq(*upload, env={"PW": "x", "FASPQ_SECRET_KEY": "short"}), "too short")
    _one_line_error(
        faspq(*upload, env={"PW": "x", "FASPQ_SECRET_KEY": None, "FASPQ_SECRET_KEY_FILE": str(tmp_path / "none")}),
        "FASPQ_SECRET_KEY_FILE",
        "cannot be read",
    )
    _one_line_error(faspq("status", "x", env={"FASPQ_LEASE_TTL": "soon"}), "FASPQ_LEASE_TTL must be a number")


def test_unknown_ids_and_bad_rates(faspq_env_only):
    for args in (["rate", "nope", "100"], ["cancel", "nope"], ["finish", "nope"]):
        _one_line_error(faspq_run(*args), "no transfer nope")
    faspq = faspq_env_only
    assert not faspq.client().exists("t:control:nope")
    for args in (("nope", "0"), ("--", "nope", "-5")):
        proc = faspq_run("rate", *args)
        assert proc.returncode == 2 and "Invalid value" in proc.stderr and "Traceback" not in proc.stderr


def faspq_run(*args, **kwargs):
    return faspq(*args, **kwargs)


def _upload_args(server, *sources, dest="cli2", extra=()):
    (server.docroot / dest).mkdir(parents=True, exist_ok=True)
    return [
        "upload",
        *sources,
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--user",
        server.user,
        "--password-env",
        "TEST_PW",
        "--dest",
        dest,
        "--check-sshfp",
        server.host_key_fingerprint(),
        *extra,
    ]


def test_relative_path_resolved_where_faspq_runs_and_piped_progress(worker_factory, server, tmp_path):
    worker_factory("cx", concurrency=1)
    size = 3_000_000
    make_file(tmp_path / "small.bin", size)
    proc = faspq(
        *_upload_args(server, "small.bin", extra=("--rate", "6000")), env={"TEST_PW": server.password}, cwd=tmp_path
    )  # the worker's cwd is elsewhere: only an absolute path can reach the file
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_file(tmp_path / "small.bin", server.docroot / "cli2" / "small.bin")
    lines = [line for line in proc.stderr.splitlines() if re.match(r"transfer \w+: \d+/", line)]
    done = [
        (int(m.group(1)), m.group(2))
        for m in (re.search(r": (\d+)/(\S+) bytes, (\d+) kbps", line) for line in lines)
        if m
    ]
    assert len(done) == len(lines) >= 2, proc.stderr  # every progress line whole: nothing wrapped
    assert any(0 < moved < size for moved, _ in done), lines
    assert all(total == str(size) for moved, total in done if moved), lines


def test_a_relative_source_missing_here_is_refused_before_anything_is_queued(faspq_env_only, server, tmp_path):
    """A file only the worker's host has must be named absolutely: a relative name means this directory."""
    proc = faspq(*_upload_args(server, "only-on-the-worker.bin"), env={"TEST_PW": server.password}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "only-on-the-worker.bin: not found here" in proc.stderr and "absolute path" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_steering_says_what_it_did(worker_factory, server, tmp_path):
    worker_factory("cy", concurrency=1)
    src = tmp_path / "steer.bin"
    make_file(src, 3_000_000)
    proc = faspq(
        *_upload_args(server, str(src), dest="steer2", extra=("--rate", "1500", "--no-watch")),
        env={"TEST_PW": server.password},
    )
    transfer_id = proc.stdout.strip().splitlines()[-1]
    handle = TransferHandle(transfer_id)
    assert wait_until(lambda: handle.status().get("state") == "RUNNING", 30, 0.1)
    rate = faspq("rate", transfer_id, "3000")
    assert rate.returncode == 0 and f"target rate of {transfer_id} set to 3000 kbps" in rate.stdout, rate.stdout
    cancel = faspq("cancel", transfer_id)
    assert cancel.returncode == 0 and "cancel of" in cancel.stdout and "sent" in cancel.stdout, cancel.stdout
    assert handle.wait(timeout=60)["code"] == 28
    again = faspq("cancel", transfer_id)
    _one_line_error(again, "already ended")


def _queued_where_nobody_consumes(server, tmp_path, name: str) -> str:
    """The id of an upload of a small file ``name``.bin that faspq queued on a queue no worker consumes."""
    make_file(tmp_path / f"{name}.bin", 100)
    proc = faspq(
        *_upload_args(server, f"{name}.bin", dest=name, extra=("--queue", "nobody-here", "--no-watch")),
        env={"TEST_PW": server.password},
        cwd=tmp_path,
    )
    return proc.stdout.strip().splitlines()[-1]


def test_a_queue_nobody_consumes_is_named_and_cancel_ends_it_at_once(faspq_env_only, server, tmp_path):
    transfer_id = _queued_where_nobody_consumes(server, tmp_path, "q")
    watched = faspq("watch", transfer_id, "--timeout", "4", env={"FASPQ_NO_WORKER_AFTER": "1"})
    assert "no worker consumes queue 'nobody-here'" in watched.stderr, watched.stderr
    assert watched.returncode == 1 and "Traceback" not in watched.stderr
    cancel = faspq("cancel", transfer_id)
    assert cancel.returncode == 0 and "cancelled (it was waiting for a worker)" in cancel.stdout, cancel.stdout
    status = TransferHandle(transfer_id).status()
    assert status["state"] == "CANCELLED" and status["result"]["code"] == 28


@pytest.fixture
def faspq_env_only(faspq):
    return faspq


def test_a_broker_down_while_the_events_redis_is_up_leaves_nothing_queued(faspq_env_only, server, tmp_path):
    """Finding 10: the order and QUEUED are written, then the task message cannot be sent. The transfer ends
    FAILED "not enqueued" with its order deleted, and faspq names the broker, not the events Redis."""
    broker = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    make_file(tmp_path / "nb.bin", 100)
    proc = faspq(
        *_upload_args(server, "nb.bin", dest="nb", extra=("--id", "no-broker", "--no-watch")),
        env={"TEST_PW": server.password, "FASPQ_BROKER_URL": broker},
        cwd=tmp_path,
    )
    line = _one_line_error(proc, "cannot reach the broker at redis://:***@127.0.0.1", "ended FAILED (not enqueued)")
    assert "hunter2" not in line and proc.stdout == ""
    status = TransferHandle("no-broker").status()
    assert status["state"] == "FAILED" and status["result"]["reason"].startswith("not enqueued: "), status
    client = faspq_env_only.client()
    assert not client.exists("t:order:no-broker")
    assert 0 < client.ttl("t:status:no-broker") and 0 < client.ttl("t:events:no-broker")


def test_rate_add_and_finish_report_the_workers_verdict(worker_factory, server, tmp_path):
    """Finding 12: `rate` above the worker's cap and `add` of a file outside FASPQ_READ_DIRS are refused by the
    worker (CONTROL_REJECTED): faspq says so with the worker's reason and exit 1, never "set"/"added". What the
    worker applies is reported applied, and the files it was told to send arrive whole."""
    worker_factory("cap", concurrency=1, queues="capped", FASPQ_RATE_CAPS="capped=5000")
    src, added = tmp_path / "capped.bin", tmp_path / "added.bin"
    make_file(src, 3_000_000)
    make_file(added, 400_000)
    proc = faspq(
        *_upload_args(server, str(src), dest="capped", extra=("--rate", "2000", "--queue", "capped", "--no-watch")),
        env={"TEST_PW": server.password},
    )
    handle = TransferHandle(proc.stdout.strip().splitlines()[-1])
    assert wait_until(lambda: handle.status().get("state") == "RUNNING", 30, 0.1)
    _one_line_error(faspq("rate", handle.id, "9000"), "refused by the worker", "cap 5000")
    applied = faspq("rate", handle.id, "5000")
    assert applied.returncode == 0 and f"target rate of {handle.id} set to 5000 kbps (applied by" in applied.stdout
    assert handle.wait(timeout=60)["ok"]
    assert_same_file(src, server.docroot / "capped" / src.name)

    persistent = submit(
        fm.PersistentUpload(
            dest_user=server.user,
            dest_host=server.host,
            dest_pass=server.password,
            options=options(server, destination_root="capped", target_rate_kbps=4000),
        ),
        queue="capped",
    )
    assert wait_until(lambda: persistent.status().get("state") == "RUNNING", 30, 0.1)
    outside = faspq("add", persistent.id, "/etc/hostname", "hostname")
    _one_line_error(outside, "refused by the worker", "FASPQ_READ_DIRS")
    assert "added" not in outside.stdout
    inside = faspq("add", persistent.id, str(added), "added.bin")
    assert inside.returncode == 0 and "added to" in inside.stdout and "(applied by" in inside.stdout, inside.stdout
    finish = faspq("finish", persistent.id)
    assert finish.returncode == 0 and "(applied by" in finish.stdout, finish.stdout
    assert persistent.wait(timeout=60)["ok"]
    assert_same_file(added, server.docroot / "capped" / "added.bin")
    assert not (server.docroot / "capped" / "hostname").exists()


def test_a_control_for_a_transfer_no_worker_runs_is_sent_not_applied(faspq_env_only, server, tmp_path):
    """Queued on a queue nobody consumes: `rate` says the message waits for the worker that will run it."""
    transfer_id = _queued_where_nobody_consumes(server, tmp_path, "w")
    sent = faspq("rate", transfer_id, "3000")
    assert sent.returncode == 0 and "not applied yet" in sent.stdout and "set to" not in sent.stdout, sent.stdout
    assert faspq("cancel", transfer_id).returncode == 0


def test_ls_leaves_the_age_of_a_transfer_without_a_creation_time_blank(faspq_env_only):
    """Finding 13: a status rebuilt after Redis lost the transfer (the worker's FAILED 12 into a new Redis) has
    no ``created``: `ls` does not know its age, and does not say 0."""
    keys = Keys("t", "rebuilt-after-a-wipe")
    EventLog(faspq_env_only.client(), keys, SECRET_KEY.encode()).publish(
        {"type": "RESULT", "ok": False}, state="FAILED", result={}
    )
    listed = faspq("ls", "--all", "--format", "json")
    row = next(row for row in json.loads(listed.stdout) if row["id"] == keys.transfer_id)
    assert row["age s"] == "", row


def test_a_reversed_range_is_refused_before_anything_is_sent(faspq_env_only, server, tmp_path):
    """Finding 14: `add --start 500 --end 100` is a range no session takes (faspmanager refuses it): refused at
    once, one line, nothing appended to the transfer's control stream."""
    persistent = submit(
        fm.PersistentUpload(
            dest_user=server.user, dest_host=server.host, dest_pass=server.password, options=options(server)
        ),
        queue="nobody-here",
    )
    make_file(tmp_path / "r.bin", 1000)
    reversed_range = faspq("add", persistent.id, str(tmp_path / "r.bin"), "r.bin", "--start", "500", "--end", "100")
    _one_line_error(reversed_range, "not sent", "end_offset 100 is before start_offset 500")
    assert faspq_env_only.client().xlen(f"t:control:{persistent.id}") == 0
    assert persistent.cancel() is None


def test_an_ended_transfer_shows_its_bytes_in_ls_and_watch(worker_factory, server, tmp_path):
    """Finding 13: the last event of an ended transfer is its RESULT, whose numbers are in the result's stats:
    `ls --all` and `watch` of it show what was moved, not 0/?."""
    worker_factory("ended", concurrency=1)
    src = tmp_path / "ended.bin"
    size = 700_000
    make_file(src, size)
    proc = faspq(*_upload_args(server, str(src), dest="ended"), env={"TEST_PW": server.password})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_file(src, server.docroot / "ended" / src.name)
    transfer_id = proc.stdout.strip().splitlines()[0]
    listed = faspq("ls", "--all", "--format", "json")
    row = next(row for row in json.loads(listed.stdout) if row["id"] == transfer_id)
    assert (row["state"], row["bytes"], row["total"]) == ("SUCCEEDED", size, size), row
    watched = faspq("watch", transfer_id)
    assert watched.returncode == 0 and f"transfer {transfer_id}: {size}/{size} bytes" in watched.stderr, watched.stderr
