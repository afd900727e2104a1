"""What Celery users (the result backend, Flower) see of a transfer: FAILURE with the engine's code, RETRY while
it waits, PROGRESS with bytes/rate/ETA while it runs; retries as many as the policy allows; DNS not retried."""

from __future__ import annotations

import time

import pytest
from celery.result import AsyncResult

from tasks.client import submit
from tasks.transfer import celery_app
from tests.support.files import assert_same_file
from tests.support.ports import free_port

from .support import make_file, types, upload

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def worker(worker_factory):
    return worker_factory("st", concurrency=2, FASPQ_PROGRESS_INTERVAL="0.2")


def _backend(handle) -> AsyncResult:
    return AsyncResult(handle.id, app=celery_app(handle._settings))


def test_five_retries_then_failure_not_a_crash(worker, server, tmp_path):
    """The policy allows 5 retries: all 5 happen (Celery's default of 3 must not cut them short)."""
    src = tmp_path / "five.bin"
    make_file(src, 1000)

    order = upload(server, [src], "five")
    order.options.tcp_port = free_port()
    handle = submit(order, retry={"max_retries": 5, "backoff_s": 0.1, "backoff_max_s": 0.2, "jitter": False})
    seen_retry_state = False
    deadline = time.monotonic() + 120
    while handle.status().get("state") not in ("SUCCEEDED", "FAILED"):
        seen_retry_state |= _backend(handle).state == "RETRY"
        assert time.monotonic() < deadline, handle.status()
        time.sleep(0.05)
    result = handle.wait(timeout=5)
    assert not result["ok"] and result["attempts"] == 6, result
    events = list(handle.events(from_start=True))
    assert types(events).count("RETRY") == 5 and "TAKEOVER" not in types(events)
    assert seen_retry_state
    backend = _backend(handle)
    backend.get(timeout=10, propagate=False)
    assert backend.state == "FAILURE" and type(backend.result).__name__ == "TransferFailed"
    assert backend.result.code == result["code"] and backend.result.reason == result["reason"]
    assert "MaxRetriesExceededError" not in worker.log()


def test_unresolvable_host_fails_at_once(worker, server, tmp_path):
    src = tmp_path / "dns.bin"
    make_file(src, 1000)
    order = upload(server, [src], "dns")
    order.dest_host = "no-such-host.invalid"
    handle = submit(order, retry={"max_retries": 6, "backoff_s": 0.1, "backoff_max_s": 0.2})
    result = handle.wait(timeout=60)
    assert not result["ok"] and result["attempts"] == 1 and result["code"] == 12, result
    assert "RETRY" not in types(handle.events(from_start=True))


def test_wrong_password_is_failure_with_code_in_the_backend(worker, server, tmp_path):
    src = tmp_path / "pw.bin"
    make_file(src, 1000)
    handle = submit(upload(server, [src], "pw", password="not-the-password"), retry={"max_retries": 0})
    result = handle.wait(timeout=60)
    backend = _backend(handle)
    backend.get(timeout=10, propagate=False)
    assert backend.state == "FAILURE", backend.state
    failure = backend.result
    assert type(failure).__name__ == "TransferFailed" and failure.code == result["code"] and failure.code
    assert str(result["code"]) in str(failure) and result["error"] in str(failure)


def test_running_transfer_reports_progress_then_success(worker, server, tmp_path):
    src = tmp_path / "prog.bin"
    size = 3_000_000
    make_file(src, size)
    handle = submit(upload(server, [src], "prog", target_rate_kbps=6000, precalculate_job_size=True))  # ~4 s
    progress = []
    deadline = time.monotonic() + 60
    while handle.status().get("state") not in ("SUCCEEDED", "FAILED"):
        # state and info from one read: two could straddle the end (PROGRESS, then the result's info: CI saw it)
        meta = _backend(handle).backend.get_task_meta(handle.id)
        if meta["status"] == "PROGRESS":
            progress.append(dict(meta["result"]))
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert handle.wait(timeout=5)["ok"]
    moving = [p for p in progress if 0 < p["bytes"] < size]
    assert moving, progress
    last = moving[-1]
    assert last["total"] == size and last["rate_kbps"] > 0 and last["eta_s"] is not None
    assert _backend(handle).get(timeout=10)["ok"] and _backend(handle).state == "SUCCESS"
    assert_same_file(src, server.docroot / "prog" / src.name)
