"""Failures: a server down at first, a persistent transfer handed over at warm shutdown, secrets kept out of Redis.
A worker SIGKILLed or SIGTERMed mid-transfer: tests/faults/test_queue.py (rows of docs/reliability.md)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from types import SimpleNamespace

import asyncssh
import pytest

import faspmanager as fm
from tasks.client import submit
from tasks.local import TransferServer
from tests.support.files import assert_same_file
from tests.support.ports import free_port
from tests.support.procs import descendants

from .support import make_file, options, types, upload

pytestmark = pytest.mark.timeout(150)


def test_server_down_at_first_then_up_is_retried(worker_factory, tmp_path):
    worker_factory("r", concurrency=1)
    port = free_port()
    src = tmp_path / "retry.bin"
    make_file(src, 300_000)
    host_key = asyncssh.generate_private_key("ssh-ed25519")  # the later server's, so the order can pin it now
    (tmp_path / "late-server").mkdir()
    (tmp_path / "late-server" / "host_key").write_bytes(host_key.export_private_key())
    later = SimpleNamespace(
        host="127.0.0.1",
        port=port,
        user="bob",
        password="pw-retry-test-123",
        host_key_fingerprint=lambda: host_key.get_fingerprint("sha256"),
    )
    order = upload(later, [src], "retry")  # nothing listens on that port yet
    handle = submit(order, retry={"max_retries": 20, "backoff_s": 0.3, "backoff_max_s": 1.0})
    for event in handle.events(timeout=60):
        if event["type"] == "RETRY":
            break
        assert event["type"] != "RESULT", event
    handle.set_rate(7777)  # sent between attempts: the attempt that runs must still apply it
    (tmp_path / "late-docroot" / "retry").mkdir(parents=True)
    srv = TransferServer(tmp_path / "late-server", later.user, later.password, tmp_path / "late-docroot", port=port)
    try:
        result = handle.wait(timeout=60)
        assert result["ok"], result
        assert result["attempts"] >= 2
        assert_same_file(src, srv.docroot / "retry" / src.name)
        applied = [e for e in handle.events(from_start=True) if e["type"] == "CONTROL"]
        assert any(e["attempt"] == result["attempts"] and e["args"] == {"kbps": 7777} for e in applied)
    finally:
        srv.kill()


def test_an_orders_retries_are_capped_by_the_workers_retry_max(worker_factory, server, tmp_path):
    """An order asking more retries than the worker's FASPQ_RETRY_MAX gets the worker's; one asking a rate or a
    retry policy no engine or worker can honour is refused at submit, before anything is written."""
    worker_factory("cap", concurrency=1, queues="cap", FASPQ_RETRY_MAX="1")
    src = tmp_path / "capped.bin"
    make_file(src, 1000)
    closed = SimpleNamespace(host="127.0.0.1", port=free_port(), user="bob", password="pw-cap-test-12345")
    handle = submit(
        upload(closed, [src], "cap"), queue="cap", retry={"max_retries": 4, "backoff_s": 0.1, "backoff_max_s": 0.1}
    )
    result = handle.wait(timeout=60)
    assert not result["ok"] and result["attempts"] == 2, result
    with pytest.raises(ValueError, match="retry policy"):
        submit(upload(server, [src], "cap"), queue="cap", retry={"max_retries": 10**9, "backoff_s": 0})
    with pytest.raises(ValueError, match="target_rate_kbps must be an integer from 0 to"):
        submit(upload(server, [src], "cap", target_rate_kbps=2**63), queue="cap")


def _values(client, key: bytes):
    kind = client.type(key)
    if kind == b"string":
        yield client.get(key)
    elif kind == b"hash":
        for field, value in client.hgetall(key).items():
            yield field
            yield value
    elif kind == b"list":
        yield from client.lrange(key, 0, -1)
    elif kind == b"set":
        yield from client.smembers(key)
    elif kind == b"zset":
        yield from client.zrange(key, 0, -1)
    elif kind == b"stream":
        for _, fields in client.xrange(key):
            for field, value in fields.items():
                yield field
                yield value


def _decoded(value: bytes):
    """The value and, for a Celery message, its base64 body decoded."""
    yield value
    try:
        message = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return
    if isinstance(message, list) and message and isinstance(message[0], str):  # unacked: [message, ...]
        message = json.loads(message[0])
    if isinstance(message, dict) and message.get("properties", {}).get("body_encoding") == "base64":
        yield base64.b64decode(message["body"])


def test_no_secret_anywhere_in_redis_during_a_transfer(worker_factory, server, faspq, tmp_path):
    workers = [worker_factory("scan", concurrency=1, queues="scan")]
    src = tmp_path / "scan.bin"
    make_file(src, 1_000_000)
    cookie, token = "COOKIE-" + uuid.uuid4().hex, "TOKEN-" + uuid.uuid4().hex  # declared secrets, sealed too
    handle = submit(upload(server, [src], "scan", target_rate_kbps=2000, cookie=cookie, token=token), queue="scan")
    client = faspq.client()
    secrets = [server.password.encode(), cookie.encode(), token.encode()]
    scans = 0
    for event in handle.events(timeout=60):
        if event["type"] in ("QUEUED", "STATUS", "INIT", "STATS", "RESULT"):
            keys = list(client.scan_iter(count=1000))
            assert keys
            for key in keys:
                for value in _values(client, key):
                    for form in _decoded(value or b""):
                        for secret in secrets:
                            assert secret not in form, f"{secret[:6]!r}... found in {key!r}"
            scans += 1
    assert scans >= 3
    assert handle.wait(timeout=5)["ok"]
    for worker in workers:
        for secret in secrets:
            assert secret.decode() not in worker.log()


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_warm_shutdown_hands_a_persistent_transfer_over(worker_factory, server, tmp_path, pool):
    queue = f"handover-{pool}"
    first = worker_factory("ho", concurrency=1, queues=queue, pool=pool)
    files = [tmp_path / "h1.bin", tmp_path / "h2.bin"]
    for path in files:
        make_file(path, 300_000)
    order = fm.PersistentUpload(
        dest_user=server.user,
        dest_host=server.host,
        dest_pass=server.password,
        options=options(server, destination_root=queue),
    )
    handle = submit(order, queue=queue)
    handle.add_source(str(files[0]), "h1.bin")
    for event in handle.events(timeout=60):
        if event["type"] == "STOP":
            break
    second = worker_factory("ho", concurrency=1, queues=queue, pool=pool)
    second_pids = {str(pid) for pid in (second.process.pid, *descendants(second.process.pid))}
    stopped_at = time.monotonic()
    first.process.terminate()  # warm shutdown: a persistent session would never end by itself
    assert first.process.wait(20) == 0 and time.monotonic() - stopped_at < 15
    handle.add_source(str(files[1]), "h2.bin")
    handle.finish()
    result = handle.wait(timeout=60)
    assert result["ok"] and result["attempts"] == 2, result
    for path in files:
        assert_same_file(path, server.docroot / queue / path.name)
    events = list(handle.events(from_start=True))
    assert "HANDOVER" in types(events)
    owners = {e["attempt"]: e["worker"].split(":")[1] for e in events if e["type"] == "PICKED"}
    assert sorted(owners) == [1, 2] and owners[2] in second_pids
