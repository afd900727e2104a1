"""Review H7 O1: what the README's client Redis user writes cannot run a worker, or a reader of events, out of memory.

Redis takes values up to 512 MB. The attacker (the client user, without the shared key) writes huge control entries,
event entries, status fields and order fields with the HSET and XADD its ACL allows, from another process (nothing
big goes through this one). A worker read control entries and the order and status hashes whole before checking any MAC,
and readers (``wait``, ``events``, the dashboard's history) the event entries: each of them held every huge value at
once. The peak memory of the worker process (``VmHWM``) and of this one must stay well below one such value, and the
honest transfer still succeeds.
"""

from __future__ import annotations

import itertools
import resource
import subprocess
import sys

import pytest

from config.settings import get_settings
from tasks.client import submit
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
    src = tmp_path / "huge-queued.bin"
    make_file(src, 500_000)
    handle = submit(upload(server, [src], "huge-queued"), queue="transfers-idle")  # no worker consumes it
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
    assert_same_file(src, server.docroot / "huge-queued" / src.name)
    history = EventLog(admin, Keys("faspq", handle.id), get_settings().secret_key).history()  # as the dashboard
    assert [e["type"] for e in history][0] == "QUEUED" and history[-1]["type"] == "RESULT", history
    assert _worker_peak(worker) - before < HUGE, "the worker read a huge value"
    assert _own_peak() - own < HUGE, "a reader of the events read a huge value"
