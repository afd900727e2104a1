"""The bodies of the Celery tasks (tasks/transfer.py names them): one per order type, all :func:`run_transfer`.

A task message carries only the transfer id; the order (secrets sealed), the
retry policy and the queue are in Redis, written and signed by ``submit``.
Before anything else of the record is read its MAC is checked: an order not
signed with the shared key ends FAILED ("order not authenticated") without
running or retrying. A signed order then has to pass this worker's policy
(config/policy.py), or it fails at once with the rule it broke. The task runs
at most once at a time per transfer (lease), returns the stored result if the
transfer already ended (a late redelivery), retries retryable engine errors
with backoff and jitter (the next attempt resumes), and fails at once on the
others with the engine's reason.

Celery sees what faspq sees: a transfer that ends failed or cancelled raises
:class:`TransferFailed` (FAILURE in the result backend and Flower, with the
engine's code and reason), a wait for the next attempt is Celery's RETRY, and
while it runs the task reports a custom PROGRESS state (bytes, total, rate,
ETA; at most once per FASPQ_PROGRESS_INTERVAL) to the backend and as a
``task-progress`` event. Retries are counted by faspq (the transfer's own
retry policy, its retries capped by the worker's FASPQ_RETRY_MAX); the task's
``max_retries`` is the worker's policy, and a retry
call never lets Celery's counter (which handovers also raise) refuse it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, NoReturn

import redis
from celery import Task
from celery.exceptions import Ignore

from config.policy import PolicyError
from config.settings import RetryPolicy, get_settings
from faspmanager.codes import ErrorCode, is_retryable
from tasks.orders import ORDER_TYPES
from tasks.schema import (
    OrderNotAuthenticated,
    OrderSchemaError,
    order_from_json,
    order_type,
    stored_record,
    verify_record,
)
from tasks.secrets import Sealer
from tasks.store.events import EventLog, progress_line
from tasks.store.keys import TERMINAL_STATES, Keys, watch_key
from tasks.store.lease import Lease
from tasks.store.redisconn import redis_for, replicated, text
from tasks.store.result import Outcome, finish_transfer
from tasks.transfer import FORGOTTEN, TransferFailed

from .app import app
from .metrics import MeteredEventLog
from .runner import Attempt

log = logging.getLogger(__name__)

PERMANENT_REASONS = (
    "[Errno -2]",
    "[Errno -5]",
    "Name or service not known",
    "No address associated with hostname",
    "nodename nor servname provided",
)
"""Words of a connection error no retry can help: the host name does not resolve (EAI_NONAME, EAI_NODATA).
"Temporary failure in name resolution" (EAI_AGAIN), refused, reset, timed out and unreachable stay
transient: a server restarting or a network blip end by themselves."""


def transient(code: int | None, reason: str) -> bool:
    """Whether another attempt may succeed: the code is a retryable one and the reason is not permanent."""
    return code is not None and is_retryable(code) and not any(word in (reason or "") for word in PERMANENT_REASONS)


def _ended(result: dict[str, Any]) -> dict[str, Any]:
    """The task's return value for a transfer that ended: the result, or TransferFailed."""
    if not result.get("ok"):
        raise TransferFailed(result.get("code"), result.get("error"), result.get("reason") or "")
    return result


def run_transfer(task: Task, transfer_id: str) -> dict[str, Any]:
    settings = get_settings()
    client = redis_for(settings.events_url)
    keys = Keys(settings.prefix, transfer_id)
    events = MeteredEventLog(client, keys, settings.secret_key, keep_s=settings.keep_s)
    status = events.status()
    if not status:
        log.error("transfer %s is unknown (expired or never submitted); dropping its message", transfer_id)
        raise TransferFailed(None, None, "unknown transfer (expired or never submitted)")
    if status.get("state") in TERMINAL_STATES:  # ended before this delivery (cancelled while queued...)
        log.info("transfer %s already ended (%s); dropping this delivery", transfer_id, status.get("state"))
        return _ended(status["result"])
    lease = Lease(client, keys, settings.lease_ttl_s)
    if not lease.acquire():
        log.info("transfer %s already runs on %s; this delivery is a duplicate", transfer_id, lease.holder())
        raise Ignore()  # acknowledged, and the owner's result in the backend stays untouched
    try:
        ended = client.get(keys.ended)  # written with the result, where clients cannot undo it
        if ended is not None:
            log.error("transfer %s already ended (%s): its order is not run again", transfer_id, text(ended, "replace"))
            raise Ignore()
        status = events.status()  # the previous owner writes its result before releasing the lease
        if status.get("state") in TERMINAL_STATES:
            return _ended(status["result"])
        record = stored_record(client, keys.order)
        events.order_type = record.get("type", "")
        attempt = client.hincrby(keys.counts, "attempt", 1)
        try:
            verify_record(record, transfer_id, settings.secret_key, max_age_s=settings.keep_s)
        except OrderNotAuthenticated as exc:
            log.error("transfer %s refused: %s", transfer_id, exc)
            events.publish(
                {"type": "REJECTED", "attempt": attempt, "worker": lease.owner, "reason": str(exc)},
                state="RUNNING",
                owner=lease.owner,
                attempt=attempt,
            )
            return _ended(
                finish_transfer(
                    client, events, keys, Outcome(False, int(ErrorCode.USAGE), str(exc)), attempt, settings.keep_s
                )
            )
        events.publish(
            {"type": "PICKED", "attempt": attempt, "worker": lease.owner, "client": record["client"]},
            state="RUNNING",
            owner=lease.owner,
            client=record["client"],
            attempt=attempt,
        )
        if not replicated(client, keys.status):  # a failover now may forget the lease: the heartbeat then stops us
            log.warning("transfer %s: no replica acknowledged the pickup yet", transfer_id)
        policy = settings.retry
        try:
            order = order_from_json(json.loads(record["order"]), Sealer(settings.secret_key), transfer_id)
            if order_type(order) != record["type"]:  # the policy and the runner go by the order's real type
                raise OrderSchemaError(f"a {order_type(order)} recorded as a {record['type']}")
            settings.policy.check_order(order, record["type"], record["queue"])
            policy = RetryPolicy.from_dict(json.loads(record["retry"] or "{}"), settings.retry).capped(settings.retry)
        except PolicyError as exc:
            outcome = Outcome(False, int(ErrorCode.USAGE), str(exc))
        except Exception as exc:  # schema, key or order errors: no retry can help
            outcome = Outcome(False, int(ErrorCode.USAGE), f"order cannot be read: {exc}")
        else:
            progress = ProgressReporter(task, settings.progress_interval_s)
            try:
                outcome = Attempt(
                    order=order,
                    kind=record["type"],
                    keys=keys,
                    client=client,
                    events=events,
                    lease=lease,
                    settings=settings,
                    attempt=attempt,
                    node=task.request.hostname or "",
                    queue=record["queue"],
                    progress=progress,
                ).run()
            except Exception as exc:  # a bug, not the engine: end with a reason rather than loop via the reaper
                log.exception("transfer %s: attempt %d crashed", transfer_id, attempt)
                outcome = Outcome(False, int(ErrorCode.INTERNAL_ERROR), f"worker error: {type(exc).__name__}: {exc}")
            finally:
                progress.stopped = True  # a late listener call must not overwrite RETRY/SUCCESS/FAILURE
        if not outcome.lease_lost and lease.holder() != lease.owner:
            # fencing: cut off (a partition, a failover) longer than the lease, another owner may run it now
            outcome = dataclasses.replace(outcome, handover=False, lease_lost=True)
        if outcome.handover:
            _requeue(
                task,
                client,
                events,
                lease,
                record["queue"],
                0.0,
                settings.takeover_bound_s,
                {"type": "HANDOVER", "attempt": attempt, "worker": lease.owner},
                state="QUEUED",
            )
        if outcome.lease_lost:
            if client.exists(keys.order) or events.status().get("state") in TERMINAL_STATES:
                log.warning("transfer %s: lease lost, the new owner goes on (or ended it)", transfer_id)
                raise Ignore()  # the backend keeps the new owner's result
            # no order either: Redis came back without this transfer (no persistence), nobody else can run it
            log.error("transfer %s: Redis lost its record; the engine was stopped", transfer_id)
            return _ended(
                finish_transfer(
                    client,
                    events,
                    keys,
                    Outcome(False, int(ErrorCode.TRANSFER_ERROR), FORGOTTEN, outcome.stats, outcome.failed_files),
                    attempt,
                    settings.keep_s,
                )
            )
        if not outcome.ok and transient(outcome.code, outcome.reason):
            failures = client.hincrby(keys.counts, "failures", 1)
            if failures <= policy.max_retries:
                delay = policy.delay(failures)
                _requeue(
                    task,
                    client,
                    events,
                    lease,
                    record["queue"],
                    delay,
                    settings.takeover_bound_s,
                    {
                        "type": "RETRY",
                        "attempt": attempt,
                        "code": outcome.code,
                        "reason": outcome.reason,
                        "delay_s": delay,
                        "worker": lease.owner,
                    },
                    state="RETRYING",
                )
        return _ended(finish_transfer(client, events, keys, outcome, attempt, settings.keep_s))
    finally:
        events.attempt_over()
        lease.release()


def _requeue(
    task: Task,
    client: redis.Redis,
    events: EventLog,
    lease: Lease,
    queue: str,
    delay: float,
    bound: float,
    event: dict[str, Any],
    state: str,
) -> NoReturn:
    """Give the transfer back to the queue for a later attempt (any worker); the reaper re-sends it if
    the message is lost with the worker holding it."""
    events.publish(event, state=state)
    client.zadd(watch_key(lease.keys.prefix), {lease.keys.transfer_id: time.time() + delay + bound})
    lease.release()
    # faspq decided (failures against the transfer's policy, or a handover): Celery's count must not refuse
    raise task.retry(countdown=delay, max_retries=max(task.max_retries or 0, task.request.retries + 1), queue=queue)


class ProgressReporter:
    """Folds session stats into Celery's custom PROGRESS state: backend and ``task-progress`` event,
    throttled to one per ``interval`` seconds (and always the first). Called on the session's listener
    thread, where Celery's ``task.request`` is empty: the task's id and node are taken here."""

    def __init__(self, task: Task, interval: float) -> None:
        self._task, self._interval, self._last = task, interval, 0.0
        self._id, self._node = task.request.id, task.request.hostname
        self.stopped = False

    def __call__(self, meta: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.stopped or now - self._last < self._interval or not self._id:
            return
        self._last = now
        try:
            self._task.update_state(task_id=self._id, state="PROGRESS", meta=meta)
            with self._task.app.events.default_dispatcher(hostname=self._node) as dispatcher:
                dispatcher.send("task-progress", uuid=self._id, result=progress_line(meta), **meta)
        except Exception as exc:  # progress is best effort: never end a transfer over it
            log.warning("progress of %s not reported: %s", self._id, exc)


_RETRY = get_settings().retry


def _order_task(name: str) -> Task:
    @app.task(
        name=name,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        throws=(TransferFailed,),
        max_retries=_RETRY.max_retries,
        default_retry_delay=_RETRY.backoff_s,
        track_started=True,
    )
    def transfer(self: Task, transfer_id: str) -> dict[str, Any]:
        return run_transfer(self, transfer_id)

    return transfer


ORDER_TASKS = {name: _order_task(row.task) for name, row in ORDER_TYPES.items()}
"""The registered task of each order type."""
