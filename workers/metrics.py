"""A worker's Prometheus metrics, counted from the events it publishes.

Every state change of a transfer on a worker is an event the worker publishes (tasks/store/events.py):
PICKED (RUNNING), RETRY (RETRYING), HANDOVER (QUEUED), RESULT (SUCCEEDED, FAILED, CANCELLED), and the
engine's STATS while the attempt runs. :class:`MeteredEventLog` is the event log an attempt publishes
through; it counts each event as it goes out, so the runner needs no hooks of its own and the counters
say what the events say. The reaper counts the takeovers it makes (:data:`TAKEOVERS`).

One registry per process (prometheus_client's default, with its process and Python metrics): under
Celery's threads (or solo) pool every transfer of the worker runs in this process, so one endpoint
(workers/app.py) shows them all. A prefork pool runs transfers in child processes the endpoint cannot
see: a worker given FASPQ_METRICS_PORT refuses that pool (workers/app.py). Several workers on one host
need one port each: FASPQ_METRICS_PORT=0 picks a free one and logs it, or give each its own.

Labels are bounded: order types from the table (anything else a record claims is "other"), states from
the store's, error codes from faspmanager's table ("other" otherwise). Only the rate gauge names a
transfer, and only while an attempt of it runs here: the attempt's end removes its series.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis
from prometheus_client import Counter, Gauge, Histogram

from faspmanager.codes import ErrorCode
from tasks.orders import ORDER_TYPES
from tasks.store.events import EventLog, progress_meta
from tasks.store.keys import TERMINAL_STATES, Keys

TRANSFERS = Counter("faspq_transfers", "Transfers that entered a state on this worker", ["order_type", "state"])
RUNNING = Gauge("faspq_transfers_running", "Attempts running on this worker now", ["order_type"])
BYTES = Counter("faspq_transfer_bytes", "File bytes the engines of this worker moved", ["order_type"])
RATE = Gauge(
    "faspq_transfer_rate_bytes_per_second",
    "Current rate of each transfer running on this worker (the engine's last report)",
    ["transfer_id", "order_type"],
)
RETRIES = Counter(
    "faspq_transfer_retries", "Attempts that failed and will be retried, by engine code", ["order_type", "code"]
)
FAILURES = Counter(
    "faspq_transfer_failures", "Transfers that ended failed or cancelled, by engine code", ["order_type", "code"]
)
TAKEOVERS = Counter("faspq_lease_takeovers", "Transfers of dead owners this worker's reaper handed back to the queue")
QUEUE_WAIT = Histogram(
    "faspq_queue_wait_seconds",
    "From enqueued (submitted, retry due, taken over, handed over) to started on this worker",
    ["order_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)

STATES = frozenset({"QUEUED", "RUNNING", "RETRYING", *TERMINAL_STATES})
STATE_EVENTS = frozenset({"PICKED", "RETRY", "HANDOVER", "RESULT"})
"""The events that move a transfer to another state (the others keep it RUNNING)."""
ATTEMPT_ENDS = frozenset({"RETRY", "HANDOVER", "RESULT"})
CODES = frozenset(int(code) for code in ErrorCode)


def order_label(kind: object) -> str:
    return kind if isinstance(kind, str) and kind in ORDER_TYPES else "other"


def code_label(code: object) -> str:
    return str(code) if isinstance(code, int) and not isinstance(code, bool) and code in CODES else "other"


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def enqueued_at(last: dict[str, Any]) -> float | None:
    """When the transfer became due for a worker, from the event before PICKED (its status ``last``): the
    event's time, plus the backoff of a RETRY. None when there is nothing to tell (an unreadable status)."""
    at = _number(last.get("time"))
    if not at:
        return None
    return at + _number(last.get("delay_s")) if last.get("type") == "RETRY" else at


class MeteredEventLog(EventLog):
    """The event log of one attempt, counting what it publishes. ``order_type`` is set once the order is read;
    :meth:`attempt_over` (always, when the attempt is left) ends the attempt's gauges however it ended."""

    def __init__(
        self, client: redis.Redis, keys: Keys, secret: bytes | None, order_type: str = "", keep_s: int | None = None
    ) -> None:
        super().__init__(client, keys, secret, keep_s=keep_s)
        self.order_type = order_type
        self._running = False
        self._counted = 0  # bytes of this attempt already in BYTES

    @property
    def order_type(self) -> str:
        return self._order_type

    @order_type.setter
    def order_type(self, kind: str) -> None:
        self._order_type = order_label(kind)

    def publish(self, event: dict[str, Any], **status: object) -> str:
        kind = event.get("type")
        waited = self._waited() if kind == "PICKED" else None
        event_id = super().publish(event, **status)
        self._count(kind, event, status.get("state"), waited)
        return event_id

    def attempt_over(self) -> None:
        """The running gauge drops last, so a scrape that sees no attempt running sees all of their counts."""
        if self._running:
            self._running = False
            with contextlib.suppress(KeyError):  # an attempt may end before its engine reported a rate
                RATE.remove(self._keys.transfer_id, self._order_type)
            RUNNING.labels(self._order_type).dec()

    def _waited(self) -> float | None:
        try:
            since = enqueued_at(self.status().get("last") or {})
        except (redis.RedisError, ValueError, AttributeError):  # hostile or missing: no sample
            return None
        return None if since is None else max(time.time() - since, 0.0)

    def _count(self, kind: object, event: dict[str, Any], state: object, waited: float | None) -> None:
        order = self._order_type
        if kind in STATE_EVENTS and state in STATES:
            TRANSFERS.labels(order, state).inc()
        if kind == "PICKED" and not self._running:
            self._running = True
            RUNNING.labels(order).inc()
            if waited is not None:
                QUEUE_WAIT.labels(order).observe(waited)
        session = event.get("session") if kind != "RESULT" else event.get("stats")
        if isinstance(session, dict):
            meta = progress_meta(session)
            moved = meta["bytes"]
            if moved > self._counted:
                BYTES.labels(order).inc(moved - self._counted)
                self._counted = moved
            if self._running and kind not in ATTEMPT_ENDS:
                RATE.labels(self._keys.transfer_id, order).set(_number(meta["rate_kbps"]) * 1000 / 8)
        if kind == "RETRY":
            RETRIES.labels(order, code_label(event.get("code"))).inc()
        elif kind == "RESULT" and not event.get("ok"):
            FAILURES.labels(order, code_label(event.get("code"))).inc()
        if kind in ATTEMPT_ENDS:
            self.attempt_over()
