"""Review H7 O1: what the README's client Redis user writes cannot run a worker, or a reader of events, out of memory.

Redis takes values up to 512 MB. The attacker (the client user, without the shared key) writes huge control entries,
event entries, status fields and order fields with the HSET and XADD its ACL allows, from another process (nothing
big goes through this one). A worker read control entries and the order and status hashes whole before checking any MAC,
and readers (``wait``, ``events``, the dashboard's history) the event entries: each of them held every huge value at
once. The peak memory of the worker process (``VmHWM``) and of this one must stay well below one such value, and the
honest transfer still succeeds.

Measuring an entry copies it inside Redis, which serves nobody meanwhile: a read that measured every huge entry in one
call held Redis for seconds under load, past the workers' lease (3 s here), and each takeover replayed them again. One
read now stops after a huge entry, and its callers read on.
"""

from __future__ import annotations

import itertools
import resource
import subprocess
import sys

import pytest

from config.settings import get_settings
from tasks.client import submit
from tasks.store.bounded import MAX_EVENT_BYTES, oversize, stream_range
from tasks.store.events import EventLog
from tasks.store.keys import Keys
from tasks.transfer import send
from tests.security.test_queue_redis import readme_users  # noqa: F401
from tests.support.files import assert_same_file
from tests.workers.conftest import server  # noqa: F401
from tests.workers.support import make_file, running_upload, upload

pytestmark = pytest.mark.timeout(120)

HUGE = 48 << 20
"""One attacker value."""
_WRITE = """
import sys, redis
attacker, huge = redis.Redis.from_url(sys.argv[1]), b"x" * int(sys.argv[2])
for command, key, field in zip(*[iter(sys.argv[3:])] * 3):
    if command == "XADD":
        attacker.xadd(key, {field: huge})
    else:
        attacker.hset(key, field, huge)
"""


def _write_huge(client_url: str, *writes: tuple[str, str, str]) -> None:
    """The attacker's ``(command, key, field)`` writes of HUGE bytes each (XADD or HSET), as the client user."""
    argv = [sys.executable, "-c", _WRITE, client_url, str(HUGE), *itertools.chain.from_iterable(writes)]
    subprocess.run(argv, check=True, timeout=60)


def _xadd3(key: str, field: str) -> list[tuple[str, str, str]]:
    """Three huge entries for stream ``key``."""
    return [("XADD", key, field)] * 3


def _worker_peak(worker) -> int:
    """The worker process's peak resident memory in bytes (its pool is threads: the transfer runs in it)."""
    with open(f"/proc/{worker.process.pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _own_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _waiting(server, tmp_path, name: str):
    """A transfer submitted to a queue no worker consumes: it waits, its keys as the attacker leaves them."""
    src = tmp_path / f"{name}.bin"
    make_file(src, 500_000)
    return submit(upload(server, [src], name), queue="transfers-idle"), src


def test_huge_control_entries_and_status_fields_do_not_reach_a_running_worker(readme_users, server, tmp_path):  # noqa: F811
    client_url, worker, _ = readme_users
    handle, src = running_upload(server, tmp_path, "huge-control")
    before = _worker_peak(worker)
    # the status field is read again when the transfer ends
    _write_huge(
        client_url, *_xadd3(f"faspq:control:{handle.id}", "d"), ("HSET", f"faspq:status:{handle.id}", "order_type")
    )
    result = handle.wait(timeout=60)
    assert result["ok"], (result, worker.log()[-3000:])
    assert_same_file(src, server.docroot / "huge-control" / src.name)
    assert _worker_peak(worker) - before < HUGE, "the worker read a huge entry"
    rejected = [e for e in handle.events(from_start=True, timeout=5) if e["type"] == "CONTROL_REJECTED"]
    assert len({e["control_id"] for e in rejected}) == 3 and all("not read" in e["reason"] for e in rejected), rejected


def test_huge_values_before_pickup_do_not_reach_the_worker_or_the_readers(readme_users, server, tmp_path):  # noqa: F811
    """Written while the transfer waits: a field of its order no worker knows, control entries the attempt replays
    from the start, event entries and a status field every reader goes through. The transfer runs, ``wait`` and
    the dashboard's history (``EventLog.history``) get its genuine events."""
    client_url, worker, admin = readme_users
    handle, src = _waiting(server, tmp_path, "huge-queued")
    _write_huge(
        client_url,
        ("HSET", f"faspq:order:{handle.id}", "junk"),
        *_xadd3(f"faspq:control:{handle.id}", "d"),
        *_xadd3(f"faspq:events:{handle.id}", "e"),
        ("HSET", f"faspq:status:{handle.id}", "owner"),
    )
    before, own = _worker_peak(worker), _own_peak()
    send(get_settings(), "FileUpload", handle.id, "transfers")  # the worker's queue
    result = handle.wait(timeout=60)
    assert result["ok"], (result, worker.log()[-3000:])
    assert result["attempts"] == 1, result  # the lease held: no takeover replayed them again
    assert_same_file(src, server.docroot / "huge-queued" / src.name)
    history = EventLog(admin, Keys("faspq", handle.id), get_settings().secret_key).history()  # as the dashboard
    assert [e["type"] for e in history][0] == "QUEUED" and history[-1]["type"] == "RESULT", history
    assert _worker_peak(worker) - before < HUGE, "the worker read a huge value"
    assert _own_peak() - own < HUGE, "a reader of the events read a huge value"


def test_a_read_stops_after_a_huge_entry_and_its_readers_read_on(readme_users, server, tmp_path):  # noqa: F811
    """Three huge event entries between genuine ones: one read returns at most one of them, and every reader that
    needs more (``events``, the dashboard's history) still gets every genuine event, in order."""
    client_url, _, admin = readme_users
    handle, _ = _waiting(server, tmp_path, "huge-between")
    key = f"faspq:events:{handle.id}"
    _write_huge(client_url, *_xadd3(key, "e"))
    log = EventLog(admin, Keys("faspq", handle.id), get_settings().secret_key)
    for n in range(3):
        log.publish({"type": "NOTE", "n": n})
    for reverse in (False, True):
        entries = stream_range(admin, key, None, 100, MAX_EVENT_BYTES, reverse)
        stubs = [n for n, (_, fields) in enumerate(entries) if oversize(fields) is not None]
        assert stubs == [len(entries) - 1], entries  # the first huge entry ends the read
    genuine = ["QUEUED", "NOTE", "NOTE", "NOTE"]
    assert [e["type"] for e in log.history()] == genuine
    followed = handle.events(from_start=True, timeout=5)
    assert [next(followed)["type"] for _ in genuine] == genuine


def test_a_cancel_after_huge_control_entries_ends_the_transfer_before_it_starts(readme_users, server, tmp_path):  # noqa: F811
    """The worker replays the control stream from the start, a read at a time, past the huge entries, to the
    cancel sent after them."""
    client_url, worker, _ = readme_users
    handle, _ = _waiting(server, tmp_path, "huge-cancel")
    _write_huge(client_url, *_xadd3(f"faspq:control:{handle.id}", "d"))
    assert handle.cancel() is not None  # the client user takes no lease: the worker applies it
    send(get_settings(), "FileUpload", handle.id, "transfers")
    result = handle.wait(timeout=60)
    assert result["code"] == 28 and result["reason"] == "cancelled before the session started", (result, worker.log())


def test_a_huge_state_does_not_reach_a_waiting_reader(readme_users, server, tmp_path):  # noqa: F811
    """The attacker makes a waiting transfer's ``state`` huge: a reader waiting for its result looks on every poll
    whether the status is still there, and Redis sends it less than one huge value in all."""
    client_url, _, admin = readme_users
    handle, _ = _waiting(server, tmp_path, "huge-state")
    _write_huge(client_url, ("HSET", f"faspq:status:{handle.id}", "state"))
    sent = int(admin.info("stats")["total_net_output_bytes"])
    with pytest.raises(TimeoutError):
        handle.wait(timeout=3)  # no worker runs it: it polls until then
    assert int(admin.info("stats")["total_net_output_bytes"]) - sent < HUGE, "the reader read the huge state"
