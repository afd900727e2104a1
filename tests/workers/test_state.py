"""Event log, lease and reaper against a real redis-server."""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest

from tasks.store.events import EventLog
from tasks.store.keys import Keys, watch_key
from tasks.store.lease import Lease
from tests.workers.conftest import SECRET_KEY
from workers.heartbeat import Heartbeat

_ids = itertools.count()
KEY = SECRET_KEY.encode()


@pytest.fixture
def keys():
    return Keys("s", f"tr{next(_ids)}")


@pytest.fixture
def client(redis_server):
    c = redis_server.client()
    yield c
    c.close()


@pytest.mark.timeout(20)
def test_events_in_order_and_late_subscriber_starts_from_current_status(client, keys):
    log = EventLog(client, keys, KEY)
    log.publish({"type": "QUEUED"}, state="QUEUED")
    log.publish({"type": "INIT"}, state="RUNNING")
    log.publish({"type": "STATS", "session": {"TransferBytes": 10}}, state="RUNNING")

    late = log.follow(timeout=5)
    first = next(late)
    assert first["type"] == "STATUS" and first["state"] == "RUNNING"
    assert first["last"]["session"]["TransferBytes"] == 10

    def more():
        time.sleep(0.2)
        log.publish({"type": "STATS", "session": {"TransferBytes": 20}})
        log.publish({"type": "RESULT", "ok": True}, state="SUCCEEDED", result={"ok": True})

    writer = threading.Thread(target=more)
    writer.start()
    rest = list(late)
    writer.join()  # its RESULT can arrive here before its own reply does: the client must outlive that reply
    assert [e["type"] for e in rest] == ["STATS", "RESULT"]
    assert rest[0]["session"]["TransferBytes"] == 20

    assert [e["type"] for e in log.follow(from_start=True)] == ["QUEUED", "INIT", "STATS", "STATS", "RESULT"]
    after_end = list(log.follow())
    assert len(after_end) == 1 and after_end[0]["state"] == "SUCCEEDED" and after_end[0]["result"] == {"ok": True}


@pytest.mark.timeout(10)
def test_an_ended_transfers_log_takes_nothing_more(client, keys):
    """A writer that retries its RESULT (the reply lost in a failover) appends no second one, and a cut-off former
    owner back on the network changes neither the history nor the final state."""
    log = EventLog(client, keys, KEY)
    log.publish({"type": "QUEUED"}, state="QUEUED")
    first = log.publish({"type": "RESULT", "ok": True}, state="SUCCEEDED", result={"ok": True})
    again = log.publish({"type": "RESULT", "ok": False}, state="FAILED", result={"ok": False})
    stale = log.publish({"type": "STATS", "attempt": 1}, state="RUNNING")
    assert again == stale == first
    assert [e["type"] for e in log.follow(from_start=True)] == ["QUEUED", "RESULT"]
    assert log.status()["state"] == "SUCCEEDED" and log.status()["result"] == {"ok": True}


@pytest.mark.timeout(10)
def test_follow_times_out_when_nothing_happens(client, keys):
    log = EventLog(client, keys, KEY)
    log.publish({"type": "QUEUED"}, state="QUEUED")
    events = log.follow(timeout=1.2)
    assert next(events)["type"] == "STATUS"
    with pytest.raises(TimeoutError):
        next(events)


@pytest.mark.timeout(10)
def test_lease_is_exclusive_renewable_and_fenced(client, keys):
    first, second = Lease(client, keys, ttl_s=1.0), Lease(client, keys, ttl_s=1.0)
    assert first.acquire()
    assert not second.acquire()
    assert first.renew() and not second.renew()
    second.release()  # not its lease: no effect
    assert first.holder() == first.owner
    time.sleep(1.3)  # owner silent past the TTL: the lease is free again
    assert second.acquire()
    assert not first.renew()
    assert client.zscore(watch_key(keys.prefix), keys.transfer_id) > time.time()


@pytest.mark.timeout(10)
def test_heartbeat_keeps_lease_and_reports_loss(client, keys):
    lease = Lease(client, keys, ttl_s=0.6)
    assert lease.acquire()
    lost = threading.Event()
    with Heartbeat(lease, 0.1, lost.set) as beat:
        time.sleep(1.5)
        assert lease.holder() == lease.owner and not lost.is_set()
        client.set(keys.lease, "someone-else")
        assert lost.wait(2) and beat.lost


@pytest.mark.timeout(20)
def test_reaper_re_enqueues_only_overdue_orphans_once(redis_server, client):
    from config.settings import Settings
    from tasks.transfer import celery_app
    from workers.reaper import Reaper

    settings = Settings(
        redis_url=redis_server.url,
        broker_url=redis_server.url,
        result_url=redis_server.url,
        events_url=redis_server.url,
        prefix="rp",
        queue="rq",
        lease_ttl_s=5,
        reaper_interval_s=1,
        secret_key=KEY,
    )
    reaper = Reaper(celery_app(settings), settings)
    now = time.time()
    orphan, alive, ended = (Keys("rp", name) for name in ("orphan", "alive", "ended"))
    for keys in (orphan, alive, ended):
        EventLog(client, keys, KEY).publish({"type": "PICKED"}, state="RUNNING", owner="dead-host:1:x")
        client.hset(keys.order, mapping={"task": "faspq.file_upload", "queue": "rq", "type": "FileUpload"})
        client.zadd(watch_key("rp"), {keys.transfer_id: now - 1})
    EventLog(client, ended, KEY).publish({"type": "RESULT", "ok": True}, state="SUCCEEDED", result={"ok": True})
    client.set(alive.lease, "live-host:2:y", px=5000)

    assert reaper.sweep() == ["orphan"]
    assert reaper.sweep() == []  # claimed: not sent twice
    assert client.llen("rq") == 1
    message = json.loads(client.lindex("rq", 0))
    assert message["headers"]["task"] == "faspq.file_upload" and message["headers"]["argsrepr"] == "['orphan']"
    assert EventLog(client, orphan, KEY).status()["last"]["type"] == "TAKEOVER"
    assert client.zscore(watch_key("rp"), "ended") is None  # ended transfers leave the watch list
    assert client.zscore(watch_key("rp"), "alive") is not None
    assert client.zscore(watch_key("rp"), "orphan") > now + settings.takeover_bound_s


def test_following_an_unknown_transfer_fails_fast(client):
    from tasks.store.events import UnknownTransfer

    with pytest.raises(UnknownTransfer):
        next(EventLog(client, Keys("s", "never-submitted"), KEY).follow())


@pytest.mark.slow
@pytest.mark.timeout(20)
def test_following_through_a_redis_gone_for_good_ends(tmp_path, keys) -> None:
    """A restart is ridden out (tests/faults/test_queue.py), but not a Redis that never comes back: its
    ConnectionError once it was unreachable ``forgotten_after`` seconds, not a wait without end."""
    import redis

    from tasks.local import RedisServer

    server = RedisServer(tmp_path / "redis")
    client = server.client()
    try:
        EventLog(client, keys, KEY).publish({"type": "QUEUED"}, state="QUEUED")
        events = EventLog(client, keys, KEY).follow(forgotten_after=1.0)
        assert next(events)["type"] == "STATUS"
        server.kill()
        gone = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            next(events)
        assert 1.0 < time.monotonic() - gone < 4
    finally:
        client.close()
        server.kill()


@pytest.mark.timeout(10)
def test_events_also_go_out_on_pub_sub(client, keys):
    pubsub = client.pubsub()
    pubsub.subscribe(keys.events)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    EventLog(client, keys, KEY).publish({"type": "STATS", "session": {"rate": 5}}, state="RUNNING")
    message = pubsub.get_message(timeout=2)
    event = json.loads(message["data"])
    assert (event["type"], event["session"], event["transfer_id"]) == ("STATS", {"rate": 5}, keys.transfer_id)
    pubsub.close()


@pytest.mark.timeout(20)
def test_reaper_retires_ended_transfers_left_without_a_ttl(redis_server, client):
    """A submission the broker refused, ended by a client ACL user (no DEL, no EXPIRE: end_unsent blanks its order
    and stops there), is retired by the workers, kept FASPQ_KEEP from its end. An end time a client wrote any way
    it liked neither stops the walk nor keeps anything for ever; a leased or an expiring transfer is left alone."""
    from config.settings import Settings
    from tasks.transfer import celery_app
    from workers.reaper import Reaper

    url = redis_server.url
    settings = Settings(
        redis_url=url, broker_url=url, result_url=url, events_url=url, prefix="rt", keep_s=1000, secret_key=KEY
    )
    reaper = Reaper(celery_app(settings), settings)
    now = time.time()
    names = ("left", "garbage", "inf", "leased", "kept", "forged")
    left, garbage, infinite, leased, kept, forged = (Keys("rt", n) for n in names)
    for keys in (left, garbage, infinite, leased, kept):
        EventLog(client, keys, KEY).publish({"type": "RESULT", "ok": False}, state="FAILED", result={})
        client.hset(keys.order, mapping={"type": "FileUpload", "order": "", "mac": ""})
    EventLog(client, forged, KEY).publish({"type": "QUEUED"}, state="QUEUED")  # then ended by hand, not by a RESULT
    client.hset(forged.status, mapping={"state": "FAILED", "updated": repr(now)})
    client.hset(forged.order, mapping={"type": "FileUpload", "order": "sealed", "mac": "m"})
    client.hset(left.status, "updated", repr(now - 100))
    client.hset(garbage.status, "updated", "not a time")
    client.hset(infinite.status, "updated", "inf")
    client.set(leased.lease, "live-host:2:y", px=5000)
    client.expire(kept.status, 50)
    client.hset(b"rt:status:\xff", mapping={"state": "FAILED", "updated": "1"})  # not UTF-8: not a transfer's

    assert sorted(reaper.retire_leftovers(now)) == ["garbage", "inf", "left"]
    assert 880 < client.ttl(left.status) <= 900 and 880 < client.ttl(left.events) <= 900
    assert not client.exists(left.order) and client.get(left.ended) == b"FAILED"
    for keys in (garbage, infinite):
        assert 0 < client.ttl(keys.status) <= 1000 and not client.exists(keys.order)
    assert client.ttl(leased.status) == -1 and client.exists(leased.order)
    assert 0 < client.ttl(kept.status) <= 50 and client.exists(kept.order)
    assert client.ttl(forged.status) == -1 and client.hget(forged.order, "order") == b"sealed"
    assert reaper.retire_leftovers(now) == []


@pytest.mark.timeout(20)
def test_a_record_a_client_garbled_does_not_stop_takeovers(redis_server, client):
    """Status and order hashes are client-writable (the README's client ACL user): a dead owner's transfer whose
    order lacks its task is dropped from the watch list with a warning; the other orphans are still re-enqueued."""
    from config.settings import Settings
    from tasks.transfer import celery_app
    from workers.reaper import Reaper

    url = redis_server.url
    settings = Settings(
        redis_url=url, broker_url=url, result_url=url, events_url=url, prefix="rg", queue="rgq", secret_key=KEY
    )
    reaper = Reaper(celery_app(settings), settings)
    now = time.time()
    for name in ("a-garbled", "b-orphan"):
        keys = Keys("rg", name)
        EventLog(client, keys, KEY).publish({"type": "PICKED"}, state="RUNNING", owner="dead-host:1:x")
        client.hset(keys.order, mapping={"task": "faspq.file_upload", "queue": "rgq", "type": "FileUpload"})
        client.zadd(watch_key("rg"), {name: now - 1})
    client.hdel(Keys("rg", "a-garbled").order, "task")

    assert reaper.sweep() == ["b-orphan"]
    assert client.zscore(watch_key("rg"), "a-garbled") is None and client.llen("rgq") == 1
