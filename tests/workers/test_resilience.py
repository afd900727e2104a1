"""Failures: a worker killed mid-transfer, a server down at first, warm shutdown, secrets kept out of Redis."""
from __future__ import annotations

import base64
import json
import time
from types import SimpleNamespace

import asyncssh
import pytest

import faspmanager as fm
from tasks.client import submit
from tests.support.files import assert_same_file
from tests.support.ports import free_port
from tests.support.procs import descendants
from workers.local import TransferServer

from .support import make_file, options, types, upload

pytestmark = pytest.mark.timeout(150)


def _owner_worker(handle, workers):
    """The worker process whose pid is in the transfer's owner token (host:pid:nonce)."""
    pid = int(handle.status()["owner"].split(":")[1])
    return next(w for w in workers if w.process.pid == pid)


def _wait_for_bytes(handle, at_least: int) -> int:
    for event in handle.events(timeout=60):
        done = (event.get("session") or {}).get("transfer_bytes") or 0
        if event["type"] == "STATS" and done >= at_least:
            return done
        assert event["type"] != "RESULT", f"transfer ended early: {event}"
    raise AssertionError("no progress")


def test_kill9_of_owner_hands_over_and_engine_resumes(worker_factory, server, tmp_path):
    workers = [worker_factory("k", concurrency=1), worker_factory("k", concurrency=1)]
    src = tmp_path / "big.bin"
    size = 4_000_000
    make_file(src, size)
    handle = submit(upload(server, [src], "kill", target_rate_kbps=3200))  # ~10 s at 400 kB/s
    _wait_for_bytes(handle, size // 3)
    victim = _owner_worker(handle, workers)
    killed_at = time.time()
    victim.kill()
    result = handle.wait(timeout=90)
    assert result["ok"], result
    assert_same_file(src, server.docroot / "kill" / src.name)

    events = list(handle.events(from_start=True))
    assert "TAKEOVER" in types(events)
    second = [e for e in events if e["type"] == "PICKED" and e["attempt"] == 2]
    assert len(second) == 1 and second[0]["worker"].split(":")[1] != str(victim.process.pid)
    assert second[0]["time"] - killed_at < 3 + 0.5 + 5  # lease TTL + reaper interval + slack
    first_bytes = max((e["session"].get("transfer_bytes") or 0) for e in events
                      if e["type"] == "STATS" and e["attempt"] == 1)
    second_bytes = result["stats"]["transfer_bytes"]
    resent = first_bytes + second_bytes - size
    assert resent < 0.10 * size, (first_bytes, second_bytes)


def test_server_down_at_first_then_up_is_retried(worker_factory, tmp_path):
    worker_factory("r", concurrency=1)
    port = free_port()
    src = tmp_path / "retry.bin"
    make_file(src, 300_000)
    host_key = asyncssh.generate_private_key("ssh-ed25519")  # the later server's, so the order can pin it now
    (tmp_path / "late-server").mkdir()
    (tmp_path / "late-server" / "host_key").write_bytes(host_key.export_private_key())
    later = SimpleNamespace(host="127.0.0.1", port=port, user="bob", password="pw-retry-test-123",
                            host_key_fingerprint=lambda: host_key.get_fingerprint("sha256"))
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


def test_warm_shutdown_lets_the_running_transfer_finish(worker_factory, server, tmp_path):
    worker = worker_factory("warm", concurrency=1, queues="warm")
    src = tmp_path / "warm.bin"
    make_file(src, 1_500_000)
    handle = submit(upload(server, [src], "warm", target_rate_kbps=3000), queue="warm")
    _wait_for_bytes(handle, 1)
    worker.process.terminate()  # SIGTERM: Celery's warm shutdown
    result = handle.wait(timeout=60)
    assert worker.process.wait(30) == 0
    assert result["ok"] and result["attempts"] == 1, result
    assert_same_file(src, server.docroot / "warm" / src.name)


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
    handle = submit(upload(server, [src], "scan", target_rate_kbps=2000), queue="scan")
    client = faspq.client()
    secret = server.password.encode()
    scans = 0
    for event in handle.events(timeout=60):
        if event["type"] in ("QUEUED", "STATUS", "INIT", "STATS", "RESULT"):
            keys = list(client.scan_iter(count=1000))
            assert keys
            for key in keys:
                for value in _values(client, key):
                    for form in _decoded(value or b""):
                        assert secret not in form, f"password found in {key!r}"
            scans += 1
    assert scans >= 3
    assert handle.wait(timeout=5)["ok"]
    for worker in workers:
        assert server.password not in worker.log()


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_warm_shutdown_hands_a_persistent_transfer_over(worker_factory, server, tmp_path, pool):
    queue = f"handover-{pool}"
    first = worker_factory("ho", concurrency=1, queues=queue, pool=pool)
    files = [tmp_path / "h1.bin", tmp_path / "h2.bin"]
    for path in files:
        make_file(path, 300_000)
    order = fm.PersistentUpload(dest_user=server.user, dest_host=server.host, dest_pass=server.password,
                                options=options(server, destination_root=queue))
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


def test_handover_all_moves_a_file_transfer_at_warm_shutdown(worker_factory, server, tmp_path):
    first = worker_factory("all", concurrency=1, queues="handover-all", FASPQ_SHUTDOWN_HANDOVER="all")
    src = tmp_path / "moved.bin"
    size = 3_000_000
    make_file(src, size)
    handle = submit(upload(server, [src], "moved", target_rate_kbps=4000), queue="handover-all")  # ~6 s
    _wait_for_bytes(handle, size // 4)
    second = worker_factory("all", concurrency=1, queues="handover-all")
    first.process.terminate()
    assert first.process.wait(20) == 0
    result = handle.wait(timeout=60)
    assert result["ok"] and result["attempts"] == 2, result
    assert_same_file(src, server.docroot / "moved" / src.name)
    events = list(handle.events(from_start=True))
    assert "HANDOVER" in types(events)
    assert [e for e in events if e["type"] == "PICKED"][-1]["worker"].split(":")[1] == str(second.process.pid)
