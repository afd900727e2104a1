"""The faspq command line against real workers: upload, watch, status, ls, rate, cancel."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tasks.cli import main
from tasks.client import TransferHandle
from tests.support.files import assert_same_file
from tests.support.wait import wait_until

from .support import make_file

pytestmark = pytest.mark.timeout(120)


def _upload(server, src, dest, *extra, env=None):
    (server.docroot / dest).mkdir(parents=True, exist_ok=True)
    args = [
        "upload",
        str(src),
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
        "--no-watch",
        "--check-sshfp",
        server.host_key_fingerprint(),
        *extra,
    ]
    result = CliRunner().invoke(main, args, env={"TEST_PW": server.password, **(env or {})})
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_upload_watch_status(worker_factory, server, tmp_path):
    worker_factory("cli", concurrency=2)
    src = tmp_path / "cli.bin"
    make_file(src, 800_000)
    transfer_id = _upload(server, src, "cli")
    watched = CliRunner().invoke(main, ["watch", transfer_id, "--timeout", "60"])
    assert watched.exit_code == 0, watched.output
    assert_same_file(src, server.docroot / "cli" / src.name)
    status = json.loads(CliRunner().invoke(main, ["status", transfer_id]).output)
    assert status["state"] == "SUCCEEDED" and status["result"]["ok"]
    assert server.password not in watched.output + json.dumps(status)


def test_ls_rate_cancel_on_a_running_transfer(worker_factory, server, tmp_path):
    worker_factory("cli", concurrency=1)
    src = tmp_path / "steer.bin"
    make_file(src, 3_000_000)
    transfer_id = _upload(server, src, "steer", "--rate", "1500")
    handle = TransferHandle(transfer_id)
    assert wait_until(lambda: handle.status().get("state") == "RUNNING", 30, 0.1)
    listing = CliRunner().invoke(main, ["ls"], terminal_width=250)
    assert transfer_id in listing.output and "RUNNING" in listing.output
    assert CliRunner().invoke(main, ["rate", transfer_id, "3000"]).exit_code == 0
    assert CliRunner().invoke(main, ["cancel", transfer_id]).exit_code == 0
    result = handle.wait(timeout=60)
    assert result["code"] == 28
    ops = [e["op"] for e in handle.events(from_start=True) if e["type"] == "CONTROL"]
    assert ops == ["set_rate", "cancel"]
    watched = CliRunner().invoke(main, ["watch", transfer_id])
    assert watched.exit_code == 1 and "USER_CANCEL" in watched.output


def test_watch_of_an_unknown_transfer_says_so(faspq):
    result = CliRunner().invoke(main, ["watch", "no-such-transfer"])
    assert result.exit_code != 0 and "no transfer no-such-transfer" in result.output


def test_without_the_shared_key_nothing_is_submitted_or_sent(faspq, server, tmp_path):
    src = tmp_path / "nokey.bin"
    make_file(src, 100)
    no_key = {"FASPQ_SECRET_KEY": None, "FASPQ_SECRET_KEY_FILE": None, "TEST_PW": server.password}
    result = CliRunner().invoke(
        main,
        [
            "upload",
            str(src),
            "--host",
            server.host,
            "--port",
            str(server.port),
            "--user",
            server.user,
            "--password-env",
            "TEST_PW",
            "--no-watch",
        ],
        env=no_key,
    )
    assert result.exit_code == 1 and "not submitted: no shared key" in result.output, result.output
    for args in (["rate", "some-id", "100"], ["cancel", "some-id"]):
        result = CliRunner().invoke(main, args, env=no_key)
        assert result.exit_code == 1 and "not sent" in result.output and "shared key" in result.output, result.output
