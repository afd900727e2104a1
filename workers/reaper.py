"""Takeover of transfers whose owner stopped heartbeating.

Every live owner pushes its transfer's deadline in ``<prefix>:watch`` forward
at each heartbeat. A transfer past its deadline, with no lease and no final
result, belongs to a dead worker (or to a retry message a dead worker held):
one reaper claims it and enqueues its task again; the worker that picks it up
takes the lease and resumes. Bound: lease TTL + reaper interval.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from config.settings import Settings
from tasks.store.events import EventLog
from tasks.store.keys import TERMINAL_STATES, Keys, watch_key
from tasks.store.lease import new_owner_token
from tasks.store.redisconn import redis_for, text

from .metrics import TAKEOVERS

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, app: Celery, settings: Settings) -> None:
        self._app = app
        self._settings = settings
        self._redis = redis_for(settings.events_url)
        self._me = new_owner_token()
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
            except (redis.RedisError, OperationalError) as exc:  # Redis, or the broker, failing over
                log.warning("reaper sweep failed (will retry): %s", exc)

    def sweep(self, now: float | None = None) -> list[str]:
        """Re-enqueue every overdue orphan; returns their ids."""
        now = time.time() if now is None else now
        taken = []
        prefix = self._settings.prefix
        for raw in self._redis.zrangebyscore(watch_key(prefix), 0, now):
            transfer_id = text(raw)
            keys = Keys(prefix, transfer_id)
            if self._redis.exists(keys.lease):
                continue
            events = EventLog(self._redis, keys, self._settings.secret_key, keep_s=self._settings.keep_s)
            status = events.status()
            record = self._redis.hgetall(keys.order)
            if not status or status.get("state") in TERMINAL_STATES or not record:
                self._redis.zrem(watch_key(prefix), transfer_id)
                continue
            if not self._redis.set(keys.takeover, self._me, nx=True, px=int(self._settings.lease_ttl_s * 1000)):
                continue
            task, queue = text(record[b"task"]), text(record[b"queue"])
            events.publish({"type": "TAKEOVER", "previous_owner": status.get("owner"), "by": self._me}, state="QUEUED")
            self._redis.zadd(watch_key(prefix), {transfer_id: now + 2 * self._settings.takeover_bound_s})
            self._app.send_task(task, args=[transfer_id], queue=queue, task_id=transfer_id)  # its result: the id's
            TAKEOVERS.inc()
            log.warning("transfer %s of dead owner %s re-enqueued", transfer_id, status.get("owner"))
            taken.append(transfer_id)
        return taken
