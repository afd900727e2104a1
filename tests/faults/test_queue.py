"""Redis killed and restarted under a running transfer. With the append-only file (as the Procfile runs it) the
queue carries on and the transfer ends SUCCEEDED, every byte right; without persistence it ends FAILED at once,
saying so, and a resubmission with resume finishes it."""
from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import faspmanager as fm
from tasks.client import submit
from tasks.transfer import FORGOTTEN
from workers.events import UnknownTransfer
from tests.faults.helpers import needs_root
from tests.workers.conftest import faspq, server, worker_factory  # noqa: F401 (fixtures)
from tests.workers.support import assert_same, make_file, upload
from workers.local import RedisServer

pytestmark = [needs_root, pytest.mark.timeout(150)]
SIZE = 4_000_000


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """This module's Redis, restartable in place (same port, password and data directory)."""
    workdir = tmp_path_factory.mktemp("redis")
    box: dict = {"server": RedisServer(workdir, password=secrets.token_hex(16), appendonly=True), "workdir": workdir}

    class Restartable:
        url, password = box["server"].url, box["server"].password

        def restart(self, down_s: float, persistent: bool = True) -> None:
            """SIGKILL, then the same port and password ``down_s`` later: with its append-only file (everything
            back), or in a new data directory (everything forgotten, as a Redis without persistence)."""
            old = box["server"]
            old.kill()
            time.sleep(down_s)
            if not persistent:
                box["workdir"] = tmp_path_factory.mktemp("redis")
            box["server"] = RedisServer(box["workdir"], port=old.port, password=old.password, appendonly=True)

    try:
        yield Restartable()
    finally:
        box["server"].kill()


def _bytes(handle) -> int:
    for event in handle.events(timeout=60):
        if event["type"] == "STATS" and ((event.get("session") or {}).get("transfer_bytes") or 0) >= SIZE // 4:
            return event["session"]["transfer_bytes"]
        assert event["type"] != "RESULT", event
    raise AssertionError("no progress")


def test_redis_killed_and_restarted_mid_transfer(redis_server, worker_factory, server, tmp_path, record):
    worker_factory("r", concurrency=1)
    src = tmp_path / "through-a-redis-restart.bin"
    make_file(src, SIZE)
    handle = submit(upload(server, [src], "redis-restart", target_rate_kbps=3200))  # ~10 s
    _bytes(handle)
    redis_server.restart(down_s=1.0)
    result = handle.wait(timeout=90)
    assert result["ok"], result
    assert_same(src, server.docroot / "redis-restart" / src.name)
    record("Redis killed (SIGKILL) and restarted 1 s later, append-only file on", "queue", 0,
           "(none: the transfer finished SUCCEEDED)", None, "none needed: sha256 equal")


def test_redis_restarted_without_persistence_mid_transfer(redis_server, worker_factory, server, tmp_path, record):
    """Redis forgets the order, its lease and the Celery message: the worker, finding its lease and the order
    gone, stops its engine and publishes a FAILED result (12) into the new Redis, which the submitter, waiting
    through the restart, sees; the order submitted again with resume finishes, what arrived not sent again."""
    worker_factory("n", concurrency=1)
    src = tmp_path / "through-a-redis-wipe.bin"
    make_file(src, SIZE)
    order = upload(server, [src], "redis-wipe", target_rate_kbps=3200)  # ~10 s
    handle = submit(order)
    first = _bytes(handle)
    waiting = ThreadPoolExecutor(1)
    result = waiting.submit(handle.wait, 60)  # the submitter waits through the restart
    time.sleep(0.2)
    redis_server.restart(down_s=1.0, persistent=False)
    back = time.monotonic()
    outcome = result.result(timeout=60)
    seconds = time.monotonic() - back
    waiting.shutdown()
    assert not outcome["ok"] and outcome["code"] == 12 and outcome["reason"] == FORGOTTEN, outcome
    assert seconds < 3 + 2, seconds  # the lease's time (FASPQ_LEASE_TTL=3) and the engine's stop
    assert handle.status()["state"] == "FAILED"
    row = record("Redis killed (SIGKILL) and restarted 1 s later without persistence (everything forgotten)",
                 "queue", "12 (FAILED)", outcome["reason"], seconds)
    order.options.resume_check = fm.ResumeCheck.SPARSE_CHECKSUM
    again = submit(order).wait(timeout=90)
    assert again["ok"], again
    assert_same(src, server.docroot / "redis-wipe" / src.name)
    resent = first + again["stats"]["transfer_bytes"] - SIZE
    assert resent < 0.10 * SIZE, (first, again["stats"])
    row["recovery"] = (f"submitted again with resume: sent {again['stats']['transfer_bytes'] * 100 // SIZE}% of the "
                       f"file, sha256 equal")


def test_redis_restarted_without_persistence_while_queued(redis_server, faspq, server, tmp_path, record):
    """No worker ran it, so nobody can say what became of it: the waiting submitter gets UnknownTransfer once
    its status stayed missing a lease's time, not a wait without end."""
    src = tmp_path / "queued.bin"
    make_file(src, 1000)
    handle = submit(upload(server, [src], "redis-wipe-queued"), queue="no-worker-listens")
    waiting = ThreadPoolExecutor(1)
    result = waiting.submit(handle.wait, 60)
    time.sleep(0.2)
    redis_server.restart(down_s=1.0, persistent=False)
    back = time.monotonic()
    with pytest.raises(UnknownTransfer):
        result.result(timeout=30)
    seconds = time.monotonic() - back
    waiting.shutdown()
    assert 3 <= seconds < 3 + 2, seconds  # FASPQ_LEASE_TTL=3, and the one-second read
    record("Redis restarted without persistence, the transfer still queued", "queue", "UnknownTransfer",
           f"{UnknownTransfer.__name__}: {handle.id} (wait() raises it)", seconds, "submit it again")
