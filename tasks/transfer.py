"""The Celery tasks as applications see them, without their bodies (those are workers/transfer.py).

One task per order type, named in tasks/orders.py (``faspq.file_upload``...),
each taking one argument: the transfer id (the signed order waits in Redis).
A transfer that ends failed or cancelled is the task's FAILURE with
:class:`TransferFailed`, which lives here so that a client reading Celery's
result backend (JSON: module, class, args) rebuilds it without the worker
runtime. :func:`celery_app` is a client's Celery app: it sends tasks by name,
reads results and asks workers what they consume; it declares no task.
"""

from __future__ import annotations

from celery import Celery

from config.celery import celery_config
from config.settings import Settings

from .orders import ORDER_TYPES

FORGOTTEN = (
    "Redis lost this transfer's record (restarted without persistence?) and the engine was stopped: "
    "submit the order again, with resume to keep what arrived"
)
"""The reason of a transfer whose lease and order vanished under its worker (a result the client may see)."""


class TransferFailed(Exception):
    """A transfer that ended without success: ``code`` and ``error`` are the engine's (ascp) code and its
    name, ``reason`` its words. Celery stores it as the task's FAILURE (JSON: the three args)."""

    def __init__(self, code: int | None = None, error: str | None = None, reason: str = "") -> None:
        super().__init__(code, error, reason)
        self.code, self.error, self.reason = code, error, reason

    def __str__(self) -> str:
        return f"[{self.code} {self.error}] {self.reason}"


_apps: dict[tuple[Settings, bool], Celery] = {}


def celery_app(settings: Settings, sending: bool = False) -> Celery:
    """The client app of ``settings`` (one per settings and process). The ``sending`` one has no result backend:
    Celery subscribes a sender to each sent task's result channel, and on a reconnect (a Redis restart) reads
    those results with MGET, which the README's client ACL user may not run, so the send failed; nothing reads
    an outcome from Celery's backend anyway (the verified RESULT event is the outcome)."""
    key = (settings, sending)
    if key not in _apps:
        app = Celery("faspq", set_as_current=False)
        app.conf.update(celery_config(settings))
        if sending:
            app.conf.result_backend = None
        _apps[key] = app
    return _apps[key]


def send(settings: Settings, kind: str, transfer_id: str, queue: str) -> None:
    """Enqueue the task of order type ``kind`` for ``transfer_id`` on ``queue`` (the task id is the transfer's)."""
    app = celery_app(settings, sending=True)
    app.send_task(ORDER_TYPES[kind].task, args=[transfer_id], queue=queue, task_id=transfer_id)
