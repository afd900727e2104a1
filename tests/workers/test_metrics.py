"""The worker's Prometheus endpoint, scraped over HTTP while real transfers run through real workers: the
counters move by what happened (bytes by the file sizes, failures by the engine's code), the per-transfer rate
gauge exists only while its transfer runs, a takeover counts once (on the worker whose reaper made it) and the
attempt that resumes counts its own bytes on the worker that runs it."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import REGISTRY

from tasks.client import submit
from tasks.store.events import EventLog
from tasks.store.keys import Keys
from tests.support.files import assert_same_file
from tests.support.ports import free_port
from tests.support.scrape import Samples, logged_endpoint, scrape, scrape_until
from tests.support.wait import wait_until
from tests.workers.conftest import SECRET_KEY
from workers.metrics import MeteredEventLog, code_label, enqueued_at, order_label

from .support import download, make_file, upload

pytestmark = pytest.mark.timeout(150)
WHAT = "faspq worker metrics"


ENDPOINTS: dict[int, str] = {}
"""Every metrics worker of this module by pid: any live one's reaper may make a takeover (they share Redis)."""


def endpoint(worker) -> str:
    ENDPOINTS[worker.process.pid] = logged_endpoint(worker.log_path, WHAT)
    return ENDPOINTS[worker.process.pid]


def takeovers(pids) -> float:
    return sum(scrape(ENDPOINTS[pid]).value("faspq_lease_takeovers_total") for pid in pids)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def idle(url: str, timeout: float = 10) -> Samples:
    """A scrape once no attempt runs on the worker. A worker counts an event just after it publishes it, so a
    client that saw a transfer end may scrape a moment before the last counts; the running gauge drops last."""
    return scrape_until(url, lambda samples: sum(v for _, v in samples.series("faspq_transfers_running")) == 0, timeout)


def test_transfers_bytes_retries_failures_and_queue_wait(worker_factory, server, tmp_path):
    url = endpoint(worker_factory("m", concurrency=2, FASPQ_METRICS_PORT="0"))
    assert url.startswith("http://127.0.0.1:")  # loopback unless FASPQ_METRICS_ADDRESS says otherwise
    before = scrape(url)
    size = 300_000
    src = tmp_path / "ok.bin"
    make_file(src, size)

    ok = submit(upload(server, [src], "metrics")).wait(timeout=60)
    assert ok["ok"], ok
    assert_same_file(src, server.docroot / "metrics" / src.name)
    back = submit(download(server, ["metrics/ok.bin"], tmp_path / "back")).wait(timeout=60)
    assert back["ok"], back
    assert_same_file(src, tmp_path / "back" / "ok.bin")
    refused = submit(upload(server, [src], "metrics", password="not-the-password")).wait(timeout=60)
    assert refused["code"] == 19, refused
    nobody = upload(server, [src], "metrics")
    nobody.options.tcp_port = free_port()  # nothing listens there: a retryable failure, retried once
    unreachable = submit(nobody, retry={"max_retries": 1, "backoff_s": 0.2, "jitter": False}).wait(timeout=60)
    assert not unreachable["ok"] and unreachable["attempts"] == 2, unreachable
    code = str(unreachable["code"])

    after = idle(url)
    up, down = {"order_type": "FileUpload"}, {"order_type": "FileDownload"}
    transfers = "faspq_transfers_total"
    assert delta(after, before, transfers, **up, state="RUNNING") == 4  # ok, refused, unreachable twice
    assert delta(after, before, transfers, **up, state="SUCCEEDED") == 1
    assert delta(after, before, transfers, **up, state="RETRYING") == 1
    assert delta(after, before, transfers, **up, state="FAILED") == 2
    assert delta(after, before, transfers, **down, state="RUNNING") == 1
    assert delta(after, before, transfers, **down, state="SUCCEEDED") == 1
    assert delta(after, before, "faspq_transfer_bytes_total", **up) == size
    assert delta(after, before, "faspq_transfer_bytes_total", **down) == size
    assert delta(after, before, "faspq_transfer_failures_total", **up, code="19") == 1
    assert delta(after, before, "faspq_transfer_failures_total", **up, code=code) == 1
    assert delta(after, before, "faspq_transfer_retries_total", **up, code=code) == 1
    assert (
        sum(v for _, v in after.series("faspq_transfer_retries_total"))
        - sum(v for _, v in before.series("faspq_transfer_retries_total"))
        == 1
    )
    assert delta(after, before, "faspq_queue_wait_seconds_count", **up) == 4
    assert delta(after, before, "faspq_queue_wait_seconds_count", **down) == 1
    assert 0 <= delta(after, before, "faspq_queue_wait_seconds_sum", **up) < 4 * 10
    assert after.value("faspq_transfers_running", **up) == 0
    assert after.series("faspq_transfer_rate_bytes_per_second") == []  # no transfer runs: no series


def test_rate_gauge_lives_while_its_transfer_runs(worker_factory, server, tmp_path):
    url = endpoint(worker_factory("r", concurrency=1, queues="rate", FASPQ_METRICS_PORT="0"))
    size = 2_000_000
    src = tmp_path / "slow.bin"
    make_file(src, size)
    handle = submit(upload(server, [src], "rate", target_rate_kbps=4000), queue="rate")  # about 4 s
    gauge, series = "faspq_transfer_rate_bytes_per_second", {"transfer_id": handle.id, "order_type": "FileUpload"}
    seen = scrape_until(url, lambda samples: samples.value(gauge, **series) > 0, 30, step=0.2)
    rate = seen.value(gauge, **series)
    assert rate > 0, seen.by_name.get(gauge)
    assert rate <= 4000 * 1000 / 8 * 1.2  # bytes per second, from the engine's kbit/s
    assert seen.value("faspq_transfers_running", order_type="FileUpload") == 1
    result = handle.wait(timeout=60)
    assert result["ok"], result
    assert_same_file(src, server.docroot / "rate" / src.name)
    after = idle(url)
    assert after.series("faspq_transfer_rate_bytes_per_second") == []
    assert after.value("faspq_transfers_running", order_type="FileUpload") == 0


def test_a_takeover_counts_on_the_worker_that_resumes(worker_factory, server, tmp_path):
    workers = [
        worker_factory("t", concurrency=1, queues="takeover", FASPQ_METRICS_PORT="0"),
        worker_factory("t", concurrency=1, queues="takeover", FASPQ_METRICS_PORT="0"),
    ]
    urls = {worker.process.pid: endpoint(worker) for worker in workers}
    before = {pid: scrape(url) for pid, url in urls.items()}
    reapers = [pid for pid in ENDPOINTS if pid not in urls] + list(urls)  # the victim's counts vanish with it
    size = 4_000_000
    src = tmp_path / "big.bin"
    make_file(src, size)
    handle = submit(upload(server, [src], "takeover", target_rate_kbps=3200), queue="takeover")  # ~10 s
    for event in handle.events(timeout=60):
        if event["type"] == "STATS" and (event["session"].get("transfer_bytes") or 0) >= size // 3:
            break
        assert event["type"] != "RESULT", event
    owner = int(handle.status()["owner"].split(":")[1])
    victim = next(w for w in workers if w.process.pid == owner)
    survivor = next(w for w in workers if w.process.pid != owner)
    reapers.remove(owner)
    taken_before = takeovers(reapers)
    victim.kill()
    result = handle.wait(timeout=90)
    assert result["ok"] and result["attempts"] == 2, (result, _story(handle))
    assert_same_file(src, server.docroot / "takeover" / src.name)

    first, after = before[survivor.process.pid], idle(urls[survivor.process.pid])
    up = {"order_type": "FileUpload"}
    assert takeovers(reapers) - taken_before == 1  # made by one of the live workers' reapers
    assert delta(after, first, "faspq_transfers_total", **up, state="RUNNING") == 1
    assert delta(after, first, "faspq_transfers_total", **up, state="SUCCEEDED") == 1
    resumed = result["stats"]["transfer_bytes"]  # the second attempt's bytes: it resumed, it did not start over
    assert 0 < resumed < size
    assert delta(after, first, "faspq_transfer_bytes_total", **up) == resumed
    assert delta(after, first, "faspq_queue_wait_seconds_count", **up) == 1
    assert after.series("faspq_transfer_rate_bytes_per_second") == []


def _story(handle) -> list[dict]:
    """A transfer's events but its progress, for a failure message: which attempt ended how."""
    return [
        {k: v for k, v in event.items() if k in ("type", "attempt", "worker", "code", "reason", "error")}
        for event in handle.events(timeout=5, from_start=True)
        if event["type"] not in ("STATS", "STATUS")
    ][:40]


def test_a_prefork_pool_with_metrics_is_refused(worker_factory):
    worker = worker_factory(
        "p", concurrency=1, queues="prefork-metrics", wait=False, pool="prefork", FASPQ_METRICS_PORT="0"
    )
    assert wait_until(lambda: worker.process.poll() is not None, 60, step=0.2)
    assert worker.process.returncode != 0
    assert "FASPQ_METRICS_PORT needs --pool threads" in worker.log()


def test_a_taken_port_stops_the_worker_at_start(worker_factory):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = worker_factory("b", concurrency=1, queues="busy-metrics", wait=False, FASPQ_METRICS_PORT=str(port))
        assert wait_until(lambda: worker.process.poll() is not None, 60, step=0.2)
        assert worker.process.returncode != 0
    assert f"metrics on 127.0.0.1:{port}" in worker.log()


def test_labels_are_bounded_whatever_redis_holds():
    assert order_label("FileUpload") == "FileUpload"
    assert order_label("x" * 1000) == order_label(None) == "other"
    assert code_label(19) == "19"
    assert code_label(123456) == code_label("19") == code_label(None) == "other"


def test_enqueued_is_when_the_transfer_became_due():
    assert enqueued_at({"type": "QUEUED", "time": 100.0}) == 100.0
    assert enqueued_at({"type": "RETRY", "time": 100.0, "delay_s": 2.5}) == 102.5  # the backoff is no queue wait
    assert enqueued_at({"type": "TAKEOVER", "time": 100.0, "delay_s": 2.5}) == 100.0
    assert enqueued_at({"type": "QUEUED", "time": "soon"}) is None
    assert enqueued_at({}) is None


def test_an_attempt_that_ends_before_any_engine_report(redis_server):
    """No STATS, no rate series: the attempt's end still takes it off the running gauge, and counts it."""
    client = redis_server.client()
    keys = Keys("unit", "no-engine")
    EventLog(client, keys, SECRET_KEY.encode()).publish({"type": "QUEUED"}, state="QUEUED")
    events = MeteredEventLog(client, keys, SECRET_KEY.encode())
    events.order_type = "FileDownload"
    running = REGISTRY.get_sample_value("faspq_transfers_running", {"order_type": "FileDownload"}) or 0.0
    failed = REGISTRY.get_sample_value("faspq_transfer_failures_total", {"order_type": "FileDownload", "code": "8"})
    events.publish({"type": "PICKED"}, state="RUNNING")
    assert REGISTRY.get_sample_value("faspq_transfers_running", {"order_type": "FileDownload"}) == running + 1
    events.publish({"type": "RESULT", "ok": False, "code": 8}, state="FAILED")
    events.attempt_over()  # again, as run_transfer's finally does: nothing more
    assert REGISTRY.get_sample_value("faspq_transfers_running", {"order_type": "FileDownload"}) == running
    assert (
        REGISTRY.get_sample_value("faspq_transfer_failures_total", {"order_type": "FileDownload", "code": "8"})
        == (failed or 0.0) + 1
    )
