"""Queue faults. A worker SIGKILLed mid-transfer: another takes over and resumes; SIGTERMed: the transfer
finishes, or is handed over. Redis killed and restarted under a running transfer: with the append-only file (as
the Procfile runs it) the queue carries on and the transfer ends SUCCEEDED, every byte right; without
persistence it ends FAILED at once, saying so, and a resubmission with resume finishes it."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

import faspmanager as fm
from fasp.session.receiving import PIECE
from tasks.client import TransferHandle, submit
from tasks.local import RedisServer, Worker
from tasks.store.events import UnknownTransfer
from tasks.transfer import FORGOTTEN
from tests.faults.helpers import needs_root
from tests.support.files import assert_same_file
from tests.workers.conftest import faspq, server, worker_factory  # noqa: F401 (fixtures)
from tests.workers.support import make_file, types, upload

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


def _wait_for_bytes(handle: TransferHandle, at_least: int) -> int:
    """The transfer's bytes once at least ``at_least`` were sent (a STATS event)."""
    for event in handle.events(timeout=60):
        done = (event.get("session") or {}).get("transfer_bytes") or 0
        if event["type"] == "STATS" and done >= at_least:
            return done
        assert event["type"] != "RESULT", f"transfer ended early: {event}"
    raise AssertionError("no progress")


def _owner_worker(handle: TransferHandle, workers: list[Worker]) -> Worker:
    """The worker process whose pid is in the transfer's owner token (host:pid:nonce)."""
    pid = int(handle.status()["owner"].split(":")[1])
    return next(w for w in workers if w.process.pid == pid)


RESENT_MAX = PIECE + 0.02 * SIZE
"""What a resume may send twice: the receiver keeps whole pieces (its sidecar's watermark moves per piece), so
the bytes acknowledged after the last one that landed go again, up to a piece, and what the last STATS of the
first attempt could not yet tell."""


def _sent_twice(events: list[dict], result: dict, size: int) -> int:
    """Bytes the attempts sent beyond the file's size (the first attempt's last STATS: a lower bound)."""
    first = max((e["session"].get("transfer_bytes") or 0) for e in events if e["type"] == "STATS" and e["attempt"] == 1)
    return first + result["stats"]["transfer_bytes"] - size


def test_worker_killed_mid_transfer(worker_factory, server, tmp_path, record) -> None:
    """SIGKILL of the worker and its engine: another worker takes over once the lease expires, the engine
    resumes, at most a piece sent twice (RESENT_MAX)."""
    workers = [worker_factory("k", concurrency=1), worker_factory("k", concurrency=1)]
    src = tmp_path / "big.bin"
    make_file(src, SIZE)
    handle = submit(upload(server, [src], "kill", target_rate_kbps=3200))  # ~10 s at 400 kB/s
    _wait_for_bytes(handle, SIZE // 3)
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
    took_over = second[0]["time"] - killed_at
    assert took_over < 3 + 0.5 + 5  # lease TTL + reaper interval + slack
    resent = _sent_twice(events, result, SIZE)
    assert resent < RESENT_MAX, resent
    record(
        "worker SIGKILLed mid-transfer (its engine with it)",
        "queue: worker",
        0,
        "(none: the transfer finished SUCCEEDED, attempt 2)",
        None,
        f"another worker took over {took_over:.1f} s later (lease 3 s) and resumed: attempt 2 sent "
        f"{result['stats']['transfer_bytes'] * 100 // SIZE}% of the file, sha256 equal",
    )


def test_worker_terminated_lets_the_running_transfer_finish(worker_factory, server, tmp_path, record) -> None:
    """SIGTERM is Celery's warm shutdown: the running transfer finishes, then the worker exits 0."""
    worker = worker_factory("warm", concurrency=1, queues="warm")
    src = tmp_path / "warm.bin"
    make_file(src, 1_500_000)
    handle = submit(upload(server, [src], "warm", target_rate_kbps=3000), queue="warm")
    _wait_for_bytes(handle, 1)
    worker.process.terminate()
    result = handle.wait(timeout=60)
    assert worker.process.wait(30) == 0
    assert result["ok"] and result["attempts"] == 1, result
    assert_same_file(src, server.docroot / "warm" / src.name)
    record(
        "worker SIGTERMed mid-transfer (warm shutdown)",
        "queue: worker",
        0,
        "(none: the running transfer finished SUCCEEDED, then the worker exited 0)",
        None,
        "none needed: sha256 equal",
    )


def test_worker_terminated_hands_a_file_transfer_over(worker_factory, server, tmp_path, record) -> None:
    """With FASPQ_SHUTDOWN_HANDOVER=all the warm shutdown does not wait: the transfer moves to another worker,
    which resumes it."""
    first = worker_factory("all", concurrency=1, queues="handover-all", FASPQ_SHUTDOWN_HANDOVER="all")
    src = tmp_path / "moved.bin"
    size = 4_000_000
    make_file(src, size)
    handle = submit(upload(server, [src], "moved", target_rate_kbps=2000), queue="handover-all")  # ~16 s
    _wait_for_bytes(handle, size // 5)
    second = worker_factory("all", concurrency=1, queues="handover-all")  # started late: the first one picks
    terminated = time.monotonic()
    first.process.terminate()
    assert first.process.wait(20) == 0
    exited = time.monotonic() - terminated
    result = handle.wait(timeout=60)
    assert result["ok"] and result["attempts"] == 2, result
    assert_same_file(src, server.docroot / "moved" / src.name)
    events = list(handle.events(from_start=True))
    assert "HANDOVER" in types(events)
    assert [e for e in events if e["type"] == "PICKED"][-1]["worker"].split(":")[1] == str(second.process.pid)
    resent = _sent_twice(events, result, size)
    assert resent < RESENT_MAX, resent
    record(
        "worker SIGTERMed mid-transfer, FASPQ_SHUTDOWN_HANDOVER=all",
        "queue: worker",
        0,
        f"(none: handed over, the worker exited 0 after {exited:.1f} s; SUCCEEDED on another, attempt 2)",
        None,
        f"the other worker resumed: attempt 2 sent {result['stats']['transfer_bytes'] * 100 // size}% of the file, "
        "sha256 equal",
    )


def test_redis_killed_and_restarted_mid_transfer(redis_server, worker_factory, server, tmp_path, record) -> None:
    """The running transfer finishes, once, and its task message (delivered on the connection the restart broke)
    is acknowledged: nothing stays in the broker's unacked set for the visibility timeout (12 h) to deliver again,
    and the worker logs a warning, not a CRITICAL "Couldn't ack". The same worker (the only one on its queue)
    goes on consuming: a transfer submitted after the restart runs on it too."""
    worker = worker_factory("r", concurrency=2, queues="redis-restart")  # a free slot: BRPOP pending
    src = tmp_path / "through-a-redis-restart.bin"
    make_file(src, SIZE)
    handle = submit(upload(server, [src], "redis-restart", target_rate_kbps=3200), queue="redis-restart")  # ~10 s
    _wait_for_bytes(handle, SIZE // 4)
    redis_server.restart(down_s=1.0)
    result = handle.wait(timeout=90)
    assert result["ok"] and result["attempts"] == 1, result
    assert_same_file(src, server.docroot / "redis-restart" / src.name)
    assert types(handle.events(from_start=True)).count("PICKED") == 1
    broker = redis.Redis.from_url(redis_server.url)

    def unacked() -> bool:  # kombu's unacked messages by delivery tag (a killed worker's of another test too)
        return any(handle.id.encode() in message for message in broker.hvals("unacked"))

    deadline = time.monotonic() + 10  # the ack follows the result
    while unacked() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not unacked(), "the message stays unacked: delivered again after the visibility timeout"
    log = worker.log()
    assert "CRITICAL" not in log and "Couldn't ack" not in log, log[-3000:]
    assert "broker connection lost: the messages delivered on it are acknowledged" in log
    time.sleep(3)  # a worker that lost its broker connection for good has exited by now
    assert worker.process.poll() is None, f"the worker exited ({worker.process.returncode}) after the restart"
    after = tmp_path / "after-the-restart.bin"
    make_file(after, 1_000_000)
    second = submit(upload(server, [after], "redis-restart-after"), queue="redis-restart")
    assert second.wait(timeout=60)["ok"]
    assert_same_file(after, server.docroot / "redis-restart-after" / after.name)
    record(
        "Redis killed (SIGKILL) and restarted 1 s later, append-only file on",
        "queue",
        0,
        "(none: the transfer finished SUCCEEDED)",
        None,
        "none needed: sha256 equal",
    )


def test_redis_restarted_without_persistence_mid_transfer(
    redis_server, worker_factory, server, tmp_path, record
) -> None:
    """Redis forgets the order, its lease and the Celery message: the worker, finding its lease and the order
    gone, stops its engine and publishes a FAILED result (12) into the new Redis, which the submitter, waiting
    through the restart, sees; the order submitted again with resume finishes, what arrived not sent again."""
    worker_factory("n", concurrency=1)
    src = tmp_path / "through-a-redis-wipe.bin"
    make_file(src, SIZE)
    order = upload(server, [src], "redis-wipe", target_rate_kbps=3200)  # ~10 s
    handle = submit(order)
    first = _wait_for_bytes(handle, SIZE // 4)
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
    row = record(
        "Redis killed (SIGKILL) and restarted 1 s later without persistence (everything forgotten) "
        "(seconds: from Redis back)",
        "queue",
        "12 (FAILED)",
        outcome["reason"],
        seconds,
    )
    order.options.resume_check = fm.ResumeCheck.SPARSE_CHECKSUM
    again = submit(order).wait(timeout=90)
    assert again["ok"], again
    assert_same_file(src, server.docroot / "redis-wipe" / src.name)
    resent = first + again["stats"]["transfer_bytes"] - SIZE
    assert resent < RESENT_MAX, (first, again["stats"])
    row["recovery"] = (
        f"submitted again with resume: sent {again['stats']['transfer_bytes'] * 100 // SIZE}% of the file, sha256 equal"
    )


def test_redis_restarted_without_persistence_while_queued(redis_server, faspq, server, tmp_path, record) -> None:
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
    record(
        "Redis restarted without persistence, the transfer still queued (seconds: from Redis back)",
        "queue",
        "UnknownTransfer",
        f"{UnknownTransfer.__name__}: {handle.id} (wait() raises it)",
        seconds,
        "submit it again",
    )
