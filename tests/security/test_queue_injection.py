"""Issue 11, attacks 1 and 2: someone who can write to Redis but holds no shared key.

The attacker writes an order hash, a status hash and a hand-made Celery message
with plain Redis commands (tests/workers/raw.py, no project code): an upload
asking for a ``-e`` program (which would run on the worker, with its
environment), or one that carries a sealed password copied from a legitimate
queued order towards the attacker's own SSH server. Workers must run nothing
and send nothing: the order ends FAILED, "order not authenticated".
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
import uuid

import asyncssh
import pytest
from cryptography.fernet import Fernet

from tasks.client import submit
from tests.support.ports import free_port
from tests.support.programs import REPO_ROOT
from tests.workers.conftest import SECRET_KEY, faspq, redis_server, server, worker_factory  # noqa: F401
from tests.workers.raw import events, inject, old_order, wait_end
from tests.workers.support import make_file, upload

pytestmark = pytest.mark.timeout(120)
PREFIX = "t"  # tests/workers/conftest.faspq_env


@pytest.fixture(scope="module")
def prepost(tmp_path_factory):
    """The attacker's ``-e`` program: leaves a marker holding the environment it got."""
    workdir = tmp_path_factory.mktemp("prepost")
    script = workdir / "payload.sh"
    marker = workdir / "pwned"
    script.write_text(f"#!/bin/sh\nenv > {marker}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, marker


@pytest.fixture(scope="module")
def worker(worker_factory, prepost):  # noqa: F811
    """A worker whose operator even allowed that program: only the order's authenticity stops it."""
    return worker_factory("inj", concurrency=1, queues="transfers", FASPQ_PREPOST_PROGRAMS=str(prepost[0]))


class _Catcher(asyncssh.SSHServer):
    passwords: list

    def begin_auth(self, username):
        return True

    def password_auth_supported(self):
        return True

    def validate_password(self, username, password):
        self.passwords.append(password)
        return False


@pytest.fixture(scope="module")
def attacker_ssh():
    """The attacker's SSH server: records every password offered to it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    passwords: list[str] = []
    catcher = type("Catcher", (_Catcher,), {"passwords": passwords})
    port = free_port()
    key = asyncssh.generate_private_key("ssh-ed25519")

    async def listen():
        return await asyncssh.create_server(catcher, "127.0.0.1", port, server_host_keys=[key])

    listener = asyncio.run_coroutine_threadsafe(listen(), loop).result(10)
    try:
        yield port, passwords
    finally:
        listener.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _upload_fields(src, user, host, password) -> dict:
    return {
        "source_paths": [str(src)],
        "dest_user": user,
        "dest_host": host,
        "dest_paths": None,
        "dest_pass": password,
        "dest_identity": None,
    }


@pytest.mark.parametrize("claim", ["as-v1-stored-it", "claiming-v2-with-forged-mac"])
def test_injected_order_runs_no_program_and_fails_unauthenticated(worker, faspq, prepost, tmp_path, claim):  # noqa: F811
    script, marker = prepost
    marker.unlink(missing_ok=True)
    src = tmp_path / "bait.bin"
    make_file(src, 1000)
    dead_port = free_port()  # the -e program would run before any connection
    order = old_order(
        "FileUpload",
        _upload_fields(src, "x", "127.0.0.1", "plain-password"),
        {"tcp_port": dead_port, "pre_post_command_path": str(script)},
    )
    extra = (
        {}
        if claim == "as-v1-stored-it"
        else {"v": "2", "client": "admin", "submitted": repr(time.time()), "mac": "ab" * 32}
    )
    client = faspq.client()
    transfer_id = uuid.uuid4().hex
    inject(client, PREFIX, "transfers", transfer_id, order, extra)
    result = wait_end(client, PREFIX, transfer_id)
    time.sleep(1.0)  # a program started late would still show
    assert not marker.exists(), "the injected -e program ran: " + marker.read_text()[:300]
    assert not result["ok"] and "order not authenticated" in result["reason"], result
    assert result["attempts"] == 1
    kinds = [e["type"] for e in events(client, PREFIX, transfer_id)]
    assert "REJECTED" in kinds and "RETRY" not in kinds and "INIT" not in kinds, kinds
    assert not client.exists(f"{PREFIX}:order:{transfer_id}")  # dropped with the transfer's other keys


def test_previous_schema_order_is_refused_with_how_to_resubmit(worker, faspq, server, tmp_path):  # noqa: F811
    """An order exactly as a version-1 client stored it (password Fernet-sealed with the shared key)."""
    src = tmp_path / "legacy.bin"
    make_file(src, 1000)
    sealed = Fernet(SECRET_KEY.encode()).encrypt(server.password.encode()).decode()
    (server.docroot / "legacy").mkdir(exist_ok=True)
    order = old_order(
        "FileUpload",
        _upload_fields(src, server.user, server.host, {"$sealed": sealed}),
        {"tcp_port": server.port, "destination_root": "legacy"},
    )
    client = faspq.client()
    transfer_id = uuid.uuid4().hex
    inject(client, PREFIX, "transfers", transfer_id, order)
    result = wait_end(client, PREFIX, transfer_id)
    assert not result["ok"], result
    assert "order not authenticated" in result["reason"] and "schema version 1" in result["reason"]
    assert "resubmit" in result["reason"] and "FASPQ_SECRET_KEY" in result["reason"]
    assert not (server.docroot / "legacy" / src.name).exists()


def test_sealed_password_copied_into_an_injected_order_reaches_nobody(
    worker,
    faspq,
    server,
    attacker_ssh,  # noqa: F811
    tmp_path,
):
    port, captured = attacker_ssh
    src = tmp_path / "victim.bin"
    make_file(src, 1000)
    legit = submit(upload(server, [src], "victim"), queue="nobody-consumes-this")  # queued, never picked
    client = faspq.client()
    stored = json.loads(client.hget(f"{PREFIX}:order:{legit.id}", "order"))
    stolen = stored["fields"]["dest_pass"]
    assert isinstance(stolen, dict) and server.password not in json.dumps(stored)
    order = old_order(
        "FileUpload", _upload_fields(src, "victim", "127.0.0.1", stolen), {"tcp_port": port, "ignore_host_key": True}
    )
    order["v"] = stored["v"]
    transfer_id = uuid.uuid4().hex
    record = {k.decode(): v.decode() for k, v in client.hgetall(f"{PREFIX}:order:{legit.id}").items()}
    copied = {k: record[k] for k in ("v", "client", "submitted", "mac") if k in record}  # all but the order
    inject(client, PREFIX, "transfers", transfer_id, order, copied)
    result = wait_end(client, PREFIX, transfer_id)
    assert captured == [], "the worker sent the legitimate order's password to the attacker's server"
    assert not result["ok"] and "order not authenticated" in result["reason"], result


def test_no_shared_key_no_worker_and_no_submission(faspq, server, tmp_path):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k not in ("FASPQ_SECRET_KEY", "FASPQ_SECRET_KEY_FILE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-P",
            "threads",
            "-c",
            "1",
            "-Q",
            "keyless",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "refuses to start" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    src = tmp_path / "nokey.bin"
    make_file(src, 10)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FASPQ_SECRET_KEY")
        from tasks.secrets import SecretKeyError

        with pytest.raises(SecretKeyError, match="no shared key"):
            submit(upload(server, [src], "nokey"))
