"""Warm engines under a real worker: the engines are forks of one fork server per worker process (no new
interpreter per transfer), transfers stay whole, steerable and cancellable, and a fork server that dies
costs its running transfers one retry each, never a loss or a second result."""

from __future__ import annotations

import os
import signal

import pytest

from tasks.client import submit
from tests.support.files import assert_same_file
from tests.support.procs import alive, children, cmdline, descendants
from tests.support.wait import wait_until

from .support import make_file, types, upload

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _fork_servers(worker: int) -> list[int]:
    """The worker's fork servers: its children running ``-m fasp.cli.warm`` (their forks, the engines, show
    the same command line one level down)."""
    return [p for p in children(worker) if b"fasp.cli.warm" in cmdline(p)[:3]]


def _wait_running(handle) -> None:
    for event in handle.events(timeout=60):
        if event["type"] == "STATS":
            return
        assert event["type"] != "RESULT", event


def test_engines_are_forked_warm_and_stay_steerable_and_cancellable(worker_factory, server, tmp_path):
    worker = worker_factory("warm", concurrency=2)
    small = [tmp_path / f"s{i}.bin" for i in range(4)]
    for src in small:
        make_file(src, 64 << 10)
    handles = [submit(upload(server, [src], f"warm/{i}")) for i, src in enumerate(small)]
    for i, (handle, src) in enumerate(zip(handles, small)):
        assert handle.wait(timeout=60)["ok"]
        assert_same_file(src, server.docroot / "warm" / str(i) / src.name)
    (fork_server,) = _fork_servers(worker.process.pid)  # one, started on the first transfer, kept

    slow = tmp_path / "slow.bin"
    make_file(slow, 2_000_000)
    handle = submit(upload(server, [slow], "warm/slow", target_rate_kbps=1000))
    _wait_running(handle)
    (engine,) = children(fork_server)
    assert cmdline(engine)[0] == b"fasp-ascp"  # forked from the fork server, showing its own command line
    assert b"-M" in cmdline(engine)  # steered through the management port, as an exec'd engine is
    assert not [p for p in descendants(worker.process.pid) if cmdline(p)[1:3] == [b"-m", b"fasp"]]
    handle.set_rate(1500)
    handle.cancel()
    result = handle.wait(timeout=60)
    assert not result["ok"] and result["code"] == 28 and result["attempts"] == 1
    events = list(handle.events(from_start=True))
    assert [e["op"] for e in events if e["type"] == "CONTROL"] == ["set_rate", "cancel"]
    assert "RETRY" not in types(events)
    assert wait_until(lambda: not alive(engine), 10)
    assert _fork_servers(worker.process.pid) == [fork_server]


def test_a_dead_fork_server_costs_its_transfers_one_retry_not_the_transfer(worker_factory, server, tmp_path):
    worker = worker_factory("warmkill", concurrency=2, queues="warmkill")  # this worker's alone
    sources = [tmp_path / f"k{i}.bin" for i in range(4)]
    for src in sources:
        make_file(src, 1_500_000)
    handles = [
        submit(upload(server, [src], f"kill/{i}", target_rate_kbps=2000), queue="warmkill")
        for i, src in enumerate(sources)
    ]
    _wait_running(handles[0])
    (fork_server,) = _fork_servers(worker.process.pid)
    engines = children(fork_server)
    assert engines
    os.kill(fork_server, signal.SIGKILL)  # its running engines die with it
    for i, (handle, src) in enumerate(zip(handles, sources)):
        result = handle.wait(timeout=120)
        assert result["ok"], (i, result)
        assert i > 0 or result["attempts"] == 2  # the first was running when its engine died: resumed once
        events = list(handle.events(from_start=True))
        assert types(events).count("RESULT") == 1
        assert_same_file(src, server.docroot / "kill" / str(i) / src.name)
    assert not any(alive(p) for p in engines)
    replaced = _fork_servers(worker.process.pid)
    assert replaced and fork_server not in replaced  # the next transfer started a new one
