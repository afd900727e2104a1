"""Celery configuration for transfers that may run for hours.

JSON only (orders are data, never pickle); one message per worker process at a
time; a message is acknowledged only when its transfer ended, and requeued if
the process running it dies. The broker's visibility timeout is a backstop
only: the transfer lease (tasks/store/lease.py) is what keeps a running transfer
from running twice and what hands a dead owner's transfer to another worker.
It stays long (FASPQ_VISIBILITY_TIMEOUT, 12 h): a running transfer holds its
message unacknowledged for its whole run, and a shorter timeout delivers that
message again every period (the lease drops the copy, whose ack also takes the
message out of the broker's unacked set for good).
"""

from __future__ import annotations

from .settings import Settings, is_sentinel


def celery_config(settings: Settings) -> dict:
    tls = {}
    if settings.broker_url.startswith("rediss://"):
        tls["broker_use_ssl"] = settings.redis_ssl()
    if settings.result_url.startswith("rediss://"):
        tls["redis_backend_use_ssl"] = settings.redis_ssl()
    sentinel = settings.sentinel_options()
    if is_sentinel(settings.result_url):
        tls["result_backend_transport_options"] = sentinel
    return {
        **tls,
        "broker_url": settings.broker_url,
        "result_backend": settings.result_url,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": settings.restore_interval_s,
            "unacked_restore_throttle": 1,
            **(sentinel if is_sentinel(settings.broker_url) else {}),
        },
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "worker_send_task_events": True,  # Flower and `celery events` see tasks without -E
        "task_send_sent_event": True,
        "task_default_queue": settings.queue,
        "result_expires": settings.keep_s,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }
