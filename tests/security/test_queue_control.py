"""Issue 11, attack 3: control messages captured from the stream and added to it again.

A legitimate client adds a file to a persistent upload and changes its rate;
the attacker (plain Redis commands, no key) copies both stream entries and
XADDs them again: the exact replay of the latest message, and an older one.
Each must be refused and reported (CONTROL_REJECTED), never applied twice.
"""

from __future__ import annotations

import pytest

import faspmanager as fm
from tasks.client import submit
from tests.support.files import assert_same_file
from tests.workers.conftest import faspq, redis_server, server, worker_factory  # noqa: F401
from tests.workers.support import make_file, options

pytestmark = pytest.mark.timeout(120)


def test_replayed_and_old_control_messages_are_refused(worker_factory, faspq, server, tmp_path):  # noqa: F811
    worker_factory("ctl", concurrency=1)
    src = tmp_path / "once.bin"
    make_file(src, 300_000)
    order = fm.PersistentUpload(
        dest_user=server.user,
        dest_host=server.host,
        dest_pass=server.password,
        options=options(server, destination_root="replay"),
    )
    (server.docroot / "replay").mkdir(exist_ok=True)
    handle = submit(order)
    handle.add_source(str(src), "once.bin")
    handle.set_rate(9000)
    applied = 0
    for event in handle.events(timeout=60):
        applied += event["type"] == "CONTROL"
        if applied == 2:
            break
        assert event["type"] != "RESULT", event

    client = faspq.client()
    stream = f"t:control:{handle.id}"
    captured = [fields for _, fields in client.xrange(stream)]
    assert len(captured) == 2
    client.xadd(stream, captured[1])  # the latest message again
    client.xadd(stream, captured[0])  # an older one (add the file a second time)
    handle.finish()
    result = handle.wait(timeout=60)
    assert result["ok"], result
    assert_same_file(src, server.docroot / "replay" / "once.bin")

    events = list(handle.events(from_start=True))
    ops = [e["op"] for e in events if e["type"] == "CONTROL"]
    assert ops == ["add_source", "set_rate", "finish"], ops
    rejected = [e for e in events if e["type"] == "CONTROL_REJECTED"]
    assert len(rejected) == 2 and all("replayed or out-of-order" in e["reason"] for e in rejected), rejected
    assert sum(e["type"] == "STOP" for e in events) == 1  # the file went once
    senders = {e.get("sender") for e in events if e["type"] == "CONTROL"}
    assert len(senders) == 1 and None not in senders  # the audit trail names who steered


def test_one_handle_steered_from_many_threads_loses_no_message(worker_factory, faspq, server):  # noqa: F811
    """Sequence numbers are drawn and appended as one step: otherwise a thread's higher number could reach the
    stream first and the worker refuse the lower one as replayed (a lost write or add_source)."""
    import threading

    worker_factory("ctlt", concurrency=1)
    order = fm.PersistentUpload(
        dest_user=server.user,
        dest_host=server.host,
        dest_pass=server.password,
        options=options(server, destination_root="threads"),
    )
    (server.docroot / "threads").mkdir(exist_ok=True)
    handle = submit(order)
    threads = [threading.Thread(target=lambda: [handle.set_rate(5000 + i) for i in range(25)]) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handle.finish()
    result = handle.wait(timeout=60)
    assert result["ok"], result
    events = list(handle.events(from_start=True))
    assert [e for e in events if e["type"] == "CONTROL_REJECTED"] == []
    assert sum(e["type"] == "CONTROL" and e["op"] == "set_rate" for e in events) == 200
