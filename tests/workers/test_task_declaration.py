"""In-process checks of what the tasks declare and what Celery stores: retries from the policy, TransferFailed
surviving the JSON result backend, progress arithmetic, which connection errors are transient."""

from __future__ import annotations

import pytest

from config.settings import RetryPolicy
from tasks.orders import ORDER_TYPES
from tasks.store.events import progress_line, progress_meta
from tasks.transfer import TransferFailed
from workers import transfer
from workers.app import app
from workers.transfer import transient


def test_every_order_task_declares_the_policy_retries_and_expects_transfer_failed():
    for row in ORDER_TYPES.values():
        task = app.tasks[row.task]
        assert transfer.ORDER_TASKS[row.name].name == row.task
        assert task.max_retries == RetryPolicy().max_retries == 5
        assert TransferFailed in task.throws and task.acks_late


@pytest.fixture
def celery_config():
    """pytest-celery's in-process app (the ``celery_app`` fixture), with a JSON result backend as ours has."""
    return {"broker_url": "memory://", "result_backend": "cache+memory://", "result_serializer": "json"}


def test_transfer_failed_survives_the_json_backend(celery_app):
    backend = celery_app.backend
    stored = backend.prepare_exception(TransferFailed(28, "USER_CANCEL", "cancelled"), "json")
    again = backend.exception_to_python(stored)
    assert type(again) is TransferFailed and (again.code, again.error, again.reason) == (28, "USER_CANCEL", "cancelled")
    assert str(again) == "[28 USER_CANCEL] cancelled"


def test_progress_meta_and_line():
    meta = progress_meta({"transfer_bytes": 1_000_000, "pre_transfer_bytes": 3_000_000, "rate": 8000})
    assert meta == {"bytes": 1_000_000, "total": 3_000_000, "rate_kbps": 8000, "eta_s": 2.0}
    assert progress_line(meta) == "1000000/3000000 bytes, 8000 kbps, eta 2 s"
    assert progress_meta({})["eta_s"] is None and progress_line(progress_meta(None)) == "0/? bytes, 0 kbps, eta ?"


def test_which_connection_errors_are_transient():
    assert not transient(12, "cannot reach x.invalid:22: [Errno -2] Name or service not known")
    assert not transient(12, "cannot reach h:22: [Errno -5] No address associated with hostname")
    assert transient(12, "cannot reach h:22: [Errno -3] Temporary failure in name resolution")
    assert transient(12, "cannot reach h:22: [Errno 111] Connect call failed")
    assert not transient(28, "cancelled") and not transient(None, "")
    assert transfer.PERMANENT_REASONS
