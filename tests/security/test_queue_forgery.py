"""Review H7: what the README's client Redis user, without the shared key, can make others believe or do.

Its ACL lets it write every transfer's status hash and event stream (clients publish QUEUED there) and publish on
their channels. The attacker here is such a process: it writes a RESULT or a CONTROL verdict by hand, sets a
transfer's state to SUCCEEDED, or rewinds a worker's retry counter. Neither the transfer's client (``wait``,
``verdict``), nor a worker, nor the retry limit may be moved by what it wrote.
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest
import redis

from config.settings import Settings
from tasks.client import submit
from tasks.transfer import send
from tests.security.test_queue_redis import readme_users  # noqa: F401
from tests.support.files import assert_same_file
from tests.support.ports import free_port
from tests.workers.conftest import server  # noqa: F401
from tests.workers.support import make_file, running_upload, upload
from tests.workers.test_cli_errors import _upload_args, faspq

pytestmark = pytest.mark.timeout(120)

FORGED = {"ok": True, "reason": "forged", "code": None, "error": None, "stats": {}, "failed_files": [], "attempts": 1}


def _forge_end(attacker: redis.Redis, transfer_id: str) -> None:
    """A RESULT appended and published by hand, the status set to SUCCEEDED with it, and some unreadable JSON."""
    event = json.dumps({"type": "RESULT", "transfer_id": transfer_id, "time": time.time(), **FORGED})
    events, status = f"faspq:events:{transfer_id}", f"faspq:status:{transfer_id}"
    attacker.xadd(events, {"e": event, "mac": "0" * 64})
    attacker.hset(status, mapping={"state": "SUCCEEDED", "result": json.dumps(FORGED), "retry": "{"})
    attacker.publish(events, event)


def test_a_forged_result_of_a_running_transfer_is_not_believed(readme_users, server, tmp_path):  # noqa: F811
    client_url, worker, _ = readme_users
    handle, src = running_upload(server, tmp_path, "forged-running")
    _forge_end(redis.Redis.from_url(client_url), handle.id)
    result = handle.wait(timeout=60)
    assert result["ok"] and result["reason"] != "forged" and result["stats"], result
    assert handle.status()["state"] == "SUCCEEDED"
    assert_same_file(src, server.docroot / "forged-running" / src.name)


def test_a_forged_end_of_a_queued_transfer_stops_nothing(readme_users, server, tmp_path):  # noqa: F811
    """Before any worker took it: the client's wait and a control verdict do not take the forgery, and a worker
    that receives the transfer runs it (it dropped it as ended, handing Celery the forged result)."""
    client_url, worker, _ = readme_users
    src = tmp_path / "forged-queued.bin"
    make_file(src, 500_000)
    handle = submit(upload(server, [src], "forged-queued"), queue="transfers-idle")  # no worker consumes it
    control = handle.set_rate(5000)
    attacker = redis.Redis.from_url(client_url)
    verdict = {"type": "CONTROL", "transfer_id": handle.id, "time": time.time(), "control_id": control}
    attacker.xadd(f"faspq:events:{handle.id}", {"e": json.dumps({**verdict, "op": "set_rate"})})
    assert handle.verdict(control, 2) is None
    _forge_end(attacker, handle.id)
    with pytest.raises(TimeoutError):
        handle.wait(timeout=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FASPQ_SECRET_KEY")
        send(Settings.from_env(), "FileUpload", handle.id, "transfers")  # the worker's queue
    result = handle.wait(timeout=60)
    assert result["ok"] and result["reason"] != "forged" and result["stats"], (result, worker.log()[-2000:])
    assert_same_file(src, server.docroot / "forged-queued" / src.name)


def test_the_client_user_cannot_lift_a_transfers_retry_limit(readme_users, tmp_path):  # noqa: F811
    """The worker counted failures in the status hash: set back below zero between attempts, a transfer failing
    transiently was retried without end (each attempt at the remote host), past its retry policy."""
    client_url, _, _ = readme_users
    src = tmp_path / "retried.bin"
    make_file(src, 1000)
    closed = SimpleNamespace(host="127.0.0.1", port=free_port(), user="bob", password="pw-retry-test-1234")
    handle = submit(upload(closed, [src], "retried"), retry={"max_retries": 1, "backoff_s": 0.3, "backoff_max_s": 0.3})
    attacker = redis.Redis.from_url(client_url)
    stop = threading.Event()

    def rewind() -> None:
        while not stop.wait(0.02):
            attacker.hset(f"faspq:status:{handle.id}", mapping={"failures": -1000, "attempt": 0})

    thread = threading.Thread(target=rewind, daemon=True)
    thread.start()
    try:
        result = handle.wait(timeout=30)
    finally:
        stop.set()
        thread.join()
    assert not result["ok"] and result["attempts"] == 2, result


def test_the_client_user_cannot_forge_celerys_result(readme_users, server, tmp_path):  # noqa: F811
    """Review H7 O3: the client user's ACL granted Celery's result channels (``&celery-task-meta-*``), which lets it
    PUBLISH as well as SUBSCRIBE: a SUCCESS it published there is what Celery's ``AsyncResult.get()`` returns.
    Clients need no such channel (submit, ``faspq upload`` and ``wait`` go by the authenticated events), so it is
    refused, and they still run a transfer."""
    client_url, worker, _ = readme_users
    src = tmp_path / "meta.bin"
    make_file(src, 300_000)
    args = _upload_args(server, str(src), dest="meta", extra=("--id", "cli-meta"))
    proc = faspq(*args, env={"TEST_PW": server.password})
    assert proc.returncode == 0, (proc.stdout, proc.stderr, worker.log()[-3000:])
    assert_same_file(src, server.docroot / "meta" / src.name)
    meta = {"status": "SUCCESS", "result": FORGED, "task_id": "cli-meta", "traceback": None, "children": []}
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(client_url).publish("celery-task-meta-cli-meta", json.dumps(meta))
