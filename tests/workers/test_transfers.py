"""Each order type end to end through real workers, a real engine and a real fasp-server."""

from __future__ import annotations

import threading
import time

import pytest
from celery.result import AsyncResult

import faspmanager as fm
from tasks.client import submit
from tasks.transfer import celery_app
from tests.support.files import assert_same_file
from tests.support.wait import wait_until

from .support import download, first, make_file, options, types, upload

pytestmark = pytest.mark.timeout(120)

LISTENER_TYPES = {t.value for kind in (fm.TransferEventType, fm.ExtraEventType) for t in kind}  # workers opt in


@pytest.fixture(scope="module")
def workers(worker_factory):
    return [worker_factory("tr", concurrency=2)]


def test_file_upload_events_in_order(workers, server, tmp_path):
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    make_file(files[0], 1_500_000)
    make_file(files[1], 300_000)
    handle = submit(upload(server, files, "up1"))
    result = handle.wait(timeout=90)
    assert result["ok"], result
    assert result["attempts"] == 1 and result["failed_files"] == []
    for src in files:
        assert_same_file(src, server.docroot / "up1" / src.name)

    events = list(handle.events(from_start=True))
    kinds = types(events)
    assert kinds[0] == "QUEUED" and kinds[1] == "PICKED" and kinds[-1] == "RESULT"
    assert events[0]["client"] == events[1]["client"] == "tests"  # audit: who submitted, which worker ran it
    assert events[1]["worker"] == handle.status()["owner"]
    engine = [k for k in kinds if k in LISTENER_TYPES]
    assert engine[0] == "INIT" and engine[-1] == "DONE"
    assert kinds.index("SESSION") < kinds.index("START") < kinds.index("STOP") < kinds.index("DONE")
    assert sum(k == "STOP" for k in kinds) == 2
    assert {e["transfer_id"] for e in events} == {handle.id}
    times = [e["time"] for e in events]
    assert times == sorted(times)


def test_file_download(workers, server, tmp_path):
    remote = server.docroot / "dl" / "x.bin"
    make_file(remote, 1_200_000)
    local = tmp_path / "got"
    result = submit(download(server, ["dl/x.bin"], local)).wait(timeout=90)
    assert result["ok"], result
    assert_same_file(remote, local / "x.bin")


def test_persistent_upload_sources_before_pickup_and_during_session(worker_factory, server, tmp_path):
    files = {name: tmp_path / name for name in ("early.bin", "mid.bin", "late.bin")}
    for i, path in enumerate(files.values()):
        make_file(path, 400_000 + i * 1000)
    order = fm.PersistentUpload(
        dest_user=server.user,
        dest_host=server.host,
        dest_pass=server.password,
        options=options(server, destination_root="pers"),
    )
    handle = submit(order, queue="persistent")  # no worker consumes this queue yet: surely before pickup
    handle.add_source(str(files["early.bin"]), "early.bin")
    worker_factory("pers", concurrency=1, queues="persistent")
    for event in handle.events(timeout=60):
        if event["type"] == "STOP":
            break
    handle.add_source(str(files["mid.bin"]), "mid.bin")
    handle.add_source(str(files["late.bin"]), "sub/late.bin")
    handle.finish()
    result = handle.wait(timeout=90)
    assert result["ok"], result
    for dest, path in (
        ("early.bin", files["early.bin"]),
        ("mid.bin", files["mid.bin"]),
        ("sub/late.bin", files["late.bin"]),
    ):
        assert_same_file(path, server.docroot / "pers" / dest)
    applied = [
        e for e in handle.events(from_start=True) if e["type"] == "CONTROL" and e["attempt"] == result["attempts"]
    ]
    assert [e["op"] for e in applied] == ["add_source", "add_source", "add_source", "finish"]


def test_persistent_download(workers, server, tmp_path):
    remotes = [server.docroot / "pd" / f"{i}.bin" for i in range(2)]
    for remote in remotes:
        make_file(remote, 350_000)
    local = tmp_path / "pd"
    local.mkdir()
    order = fm.PersistentDownload(
        source_user=server.user,
        source_host=server.host,
        source_pass=server.password,
        options=options(server, destination_root=str(local)),
    )
    handle = submit(order)
    for i in range(2):
        handle.add_source(f"pd/{i}.bin", f"{i}.bin")
    handle.finish()
    result = handle.wait(timeout=90)
    assert result["ok"], result
    for i, remote in enumerate(remotes):
        assert_same_file(remote, local / f"{i}.bin")


def test_stream_upload_through_redis_with_backpressure(workers, server, faspq, tmp_path, monkeypatch):
    window = 512 * 1024
    monkeypatch.setenv("FASPQ_STREAM_WINDOW", str(window))
    order = fm.StreamUpload(
        dest_user=server.user,
        dest_host=server.host,
        dest_pass=server.password,
        options=options(server, destination_root="st"),
    )
    handle = submit(order)
    data = bytes(range(256)) * 12_000  # ~3 MiB, far more than the window
    client = faspq.client()
    peak = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak.append(int(client.get(f"t:pending:{handle.id}") or 0))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with handle.open_stream("streamed.bin") as stream:
            for start in range(0, len(data), 100_000):
                stream.write(data[start : start + 100_000])
        handle.finish()
        result = handle.wait(timeout=90)
    finally:
        done.set()
        sampler.join()
    assert result["ok"], result
    got = (server.docroot / "st" / "streamed.bin").read_bytes()
    assert len(got) == len(data) and got == data
    assert max(peak) <= window + handle._settings.stream_chunk_bytes


def test_late_subscriber_first_sees_current_status(workers, server, tmp_path):
    src = tmp_path / "slow.bin"
    make_file(src, 1_000_000)
    handle = submit(upload(server, [src], "late", target_rate_kbps=2000))  # ~4 s
    first(handle, "STATS")
    late = handle.events(timeout=60)
    status = next(late)
    assert status["type"] == "STATUS" and status["state"] == "RUNNING"
    assert status["owner"] and status["attempt"] == 1
    assert status["last"]["type"] in LISTENER_TYPES | {"CONTROL"}
    rest = list(late)
    assert rest[-1]["type"] == "RESULT" and rest[-1]["ok"]
    assert "QUEUED" not in types(rest) and "PICKED" not in types(rest)
    assert_same_file(src, server.docroot / "late" / src.name)


def test_set_rate_shows_in_stats(workers, server, tmp_path):
    src = tmp_path / "rate.bin"
    make_file(src, 3_000_000)
    handle = submit(upload(server, [src], "rate", target_rate_kbps=1500))  # ~16 s unless sped up
    before, after = [], []
    applied = False
    for event in handle.events(timeout=60):
        if event["type"] == "STATS":
            (after if applied else before).append(event["session"]["rate"])
            if len(before) == 2 and not applied:
                handle.set_rate(8000)
        elif event["type"] == "CONTROL":
            assert event["op"] == "set_rate" and event["args"] == {"kbps": 8000}
            applied = True
    assert applied and after, (before, after)
    assert max(before) < 2500 and max(after) > 5000, (before, after)  # measured rate, kbps
    assert handle.wait(timeout=5)["ok"]
    assert_same_file(src, server.docroot / "rate" / src.name)


def test_cancel_ends_with_28_and_no_retry(workers, server, tmp_path):
    src = tmp_path / "cancel.bin"
    make_file(src, 2_000_000)
    handle = submit(upload(server, [src], "cancel", target_rate_kbps=1000))
    for event in handle.events(timeout=60):
        if event["type"] == "STATS":
            handle.cancel()
            break
    result = handle.wait(timeout=60)
    assert not result["ok"] and result["code"] == 28 and result["error"] == "USER_CANCEL"
    assert handle.status()["state"] == "CANCELLED"
    assert result["attempts"] == 1
    assert "RETRY" not in types(handle.events(from_start=True))


def test_cancel_before_pickup_ends_at_once_and_the_worker_drops_it(worker_factory, server, tmp_path):
    src = tmp_path / "never.bin"
    make_file(src, 1000)
    handle = submit(upload(server, [src], "never"), queue="cancel-early")
    assert handle.cancel() is None  # ended here, no control message
    assert handle.status()["state"] == "CANCELLED"
    result = handle.wait(timeout=1)
    assert not result["ok"] and result["code"] == 28 and result["attempts"] == 0
    worker = worker_factory("early", concurrency=1, queues="cancel-early")
    # the worker got the message and dropped it
    assert wait_until(lambda: "already ended" in worker.log(), 30, 0.2), worker.log()[-3000:]
    kinds = types(handle.events(from_start=True))
    assert kinds == ["QUEUED", "RESULT"]
    assert not (server.docroot / "never" / src.name).exists()
    assert not handle._redis.exists(handle._keys.control)
    backend = AsyncResult(handle.id, app=celery_app(handle._settings))
    # the worker logs before Celery stores the task's outcome
    assert wait_until(lambda: backend.state == "FAILURE", 30, 0.2), backend.state
    assert type(backend.result).__name__ == "TransferFailed"
    assert backend.result.code == 28


def test_wrong_password_fails_once_with_reason(workers, server, tmp_path):
    src = tmp_path / "pw.bin"
    make_file(src, 1000)
    handle = submit(upload(server, [src], "pw", password="not-the-password"))
    result = handle.wait(timeout=60)
    assert not result["ok"] and result["code"] == 19, result
    assert result["attempts"] == 1 and result["reason"]
    assert "RETRY" not in types(handle.events(from_start=True))


def test_malformed_control_is_rejected_and_transfer_goes_on(workers, server, faspq, tmp_path):
    src = tmp_path / "junk.bin"
    make_file(src, 600_000)
    handle = submit(upload(server, [src], "junk", target_rate_kbps=4000))
    client = faspq.client()
    control = f"t:control:{handle.id}"
    client.xadd(control, {"m": b"{not json"})
    client.xadd(
        control,
        {"m": b'{"v":1,"transfer_id":"%s","op":"set_rate","args":{"kbps":5}}' % handle.id.encode(), "mac": b"0" * 64},
    )
    result = handle.wait(timeout=60)
    assert result["ok"], result
    rejected = [e for e in handle.events(from_start=True) if e["type"] == "CONTROL_REJECTED"]
    assert len(rejected) == 2 and all(e["reason"] for e in rejected)
    assert_same_file(src, server.docroot / "junk" / src.name)


@pytest.mark.parametrize("case, code", [("outside-docroot", 41), ("missing-source", 4)])
def test_non_retryable_errors_fail_at_once(workers, server, tmp_path, case, code):
    if case == "outside-docroot":
        src = tmp_path / "out.bin"
        make_file(src, 1000)
        order = fm.FileUpload(
            source_paths=[str(src)],
            dest_user=server.user,
            dest_host=server.host,
            dest_pass=server.password,
            options=options(server, destination_root="../escape"),
        )
    else:
        order = download(server, ["no/such/file.bin"], tmp_path / "nothing")
    handle = submit(order)
    result = handle.wait(timeout=60)
    assert not result["ok"] and result["code"] == code, result
    assert result["attempts"] == 1 and result["reason"]
    assert "RETRY" not in types(handle.events(from_start=True))


def test_prefork_pool_runs_transfers_too(worker_factory, server, tmp_path):
    worker_factory("fork", concurrency=1, queues="prefork", pool="prefork")
    src = tmp_path / "fork.bin"
    make_file(src, 500_000)
    handle = submit(upload(server, [src], "fork"), queue="prefork")
    handle.set_rate(30000)
    result = handle.wait(timeout=60)
    assert result["ok"], result
    assert_same_file(src, server.docroot / "fork" / src.name)
    assert "CONTROL" in types(handle.events(from_start=True))


def test_the_id_of_an_ended_transfer_is_refused(workers, server, faspq, tmp_path):
    """Its status and events are kept FASPQ_KEEP: a second order under that id would be dropped by the worker as
    ended while wait() reported the old result (exit 0, nothing moved). submit says the id is in use, and
    writes nothing."""
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    make_file(first, 100_000)
    make_file(second, 200_000)
    handle = submit(upload(server, [first], "reuse-a"))
    assert handle.wait(timeout=60)["ok"]
    with pytest.raises(ValueError, match=f"transfer id '{handle.id}' is already in use"):
        submit(upload(server, [second], "reuse-b"), transfer_id=handle.id)
    assert not faspq.client().exists(f"t:order:{handle.id}")
    assert handle.status()["state"] == "SUCCEEDED"
