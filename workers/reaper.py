"""Takeover of transfers whose owner stopped heartbeating.

Every live owner pushes its transfer's deadline in ``<prefix>:watch`` forward
at each heartbeat. A transfer past its deadline, with no lease and no final
result, belongs to a dead worker (or to a retry message a dead worker held):
one reaper claims it and enqueues its task again; the worker that picks it up
takes the lease and resumes. Bound: lease TTL + reaper interval.

The same thread retires ended transfers that were left without a TTL: a
submission refused by the broker and ended by a client ACL user, who may
neither delete nor expire keys (tasks.store.result.end_unsent).
"""

from __future__ import annotations

import logging
import math
import threading
import time

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from config.settings import Settings
from tasks.schema import stored_record
from tasks.store.events import EventLog
from tasks.store.keys import TERMINAL_STATES, Keys, watch_key
from tasks.store.lease import new_owner_token
from tasks.store.redisconn import redis_for, text
from tasks.store.result import retire

from .metrics import TAKEOVERS

log = logging.getLogger(__name__)

SCAN_COUNT = 1000
"""Keys the walk for ended transfers without a TTL looks at per sweep (one SCAN step: a million keys in about
a thousand sweeps, four hours at the default 15 s)."""


class Reaper:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self._app = app
        self._settings = settings
        self._redis = redis_for(settings.events_url)
        self._me = new_owner_token()
        self._cursor = 0  # of the walk over status hashes, resumed at each sweep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faspq-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._settings.reaper_interval_s):
            try:
                self.sweep()
                self.retire_leftovers()
            except (redis.RedisError, OperationalError) as exc:  # Redis, or the broker, failing over
                log.warning("reaper sweep failed (will retry): %s", exc)

    def sweep(self, now: float | None = None) -> list[str]:
        """Re-enqueue every overdue orphan; returns their ids."""
        now = time.time() if now is None else now
        taken = []
        for raw in self._redis.zrangebyscore(watch_key(self._settings.prefix), 0, now):
            transfer_id = text(raw, "replace")
            try:
                if self._take_over(transfer_id, now):
                    taken.append(transfer_id)
            except (ValueError, KeyError) as exc:  # a client ACL user may write status and order any way it likes
                log.warning("transfer %s not taken over, its record unreadable: %s", transfer_id, exc)
                self._redis.zrem(watch_key(self._settings.prefix), transfer_id)
        return taken

    def _take_over(self, transfer_id: str, now: float) -> bool:
        """Re-enqueue ``transfer_id`` if it is an orphan this reaper claims; drop it from the watch list if it
        needs no watching any more."""
        prefix = self._settings.prefix
        keys = Keys(prefix, transfer_id)
        if self._redis.exists(keys.lease):
            return False
        events = EventLog(self._redis, keys, self._settings.secret_key, keep_s=self._settings.keep_s)
        status = events.status()
        record = stored_record(self._redis, keys.order)
        if not status or status.get("state") in TERMINAL_STATES or not record:
            self._redis.zrem(watch_key(prefix), transfer_id)
            return False
        if not self._redis.set(keys.takeover, self._me, nx=True, px=int(self._settings.lease_ttl_s * 1000)):
            return False
        task, queue = record["task"], record["queue"]
        events.publish({"type": "TAKEOVER", "previous_owner": status.get("owner"), "by": self._me}, state="QUEUED")
        self._redis.zadd(watch_key(prefix), {transfer_id: now + 2 * self._settings.takeover_bound_s})
        self._app.send_task(task, args=[transfer_id], queue=queue, task_id=transfer_id)  # its result: the id's
        TAKEOVERS.inc()
        log.warning("transfer %s of dead owner %s re-enqueued", transfer_id, status.get("owner"))
        return True

    def retire_leftovers(self, now: float | None = None) -> list[str]:
        """One SCAN step over the transfers' status hashes: an ended transfer (by its verified RESULT, never the
        hash's own state) that no worker holds and that has no TTL is retired as the worker that ends a transfer
        does, kept FASPQ_KEEP from its end. Returns their ids."""
        now = time.time() if now is None else now
        prefix, keep_s = self._settings.prefix, self._settings.keep_s
        head = len(Keys(prefix, "").status)
        self._cursor, found = self._redis.scan(self._cursor, match=Keys(prefix, "*").status, count=SCAN_COUNT)
        candidates = [Keys(prefix, text(key, "replace")[head:]) for key in found]  # names a client may choose
        pipe = self._redis.pipeline(transaction=False)
        for keys in candidates:
            pipe.ttl(keys.status)
            pipe.exists(keys.lease)
        replies = pipe.execute()
        retired = []
        for index, keys in enumerate(candidates):
            ttl, leased = replies[2 * index : 2 * index + 2]
            if ttl != -1 or leased:
                continue
            status = EventLog(self._redis, keys, self._settings.secret_key).status()  # its fields bounded in size
            state = status.get("state", "")
            if state not in TERMINAL_STATES:  # running, or the hash says so and no verified RESULT: a forgery
                continue
            left = _ended_at(status.get("updated", ""), now) + keep_s - now
            retire(self._redis, keys, state, min(keep_s, max(1, int(left))))
            log.info("transfer %s ended (%s) without a TTL: kept until FASPQ_KEEP", keys.transfer_id, state)
            retired.append(keys.transfer_id)
        return retired


def _ended_at(updated: str, now: float) -> float:
    """When a transfer ended, from its status's ``updated`` (the RESULT's time); ``now`` for anything else: a
    client ACL user may write that field any way it likes."""
    try:
        value = float(updated)
    except ValueError:
        return now
    return value if math.isfinite(value) else now
