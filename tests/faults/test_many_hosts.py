"""A deployment over seven hosts (network namespaces on one switch): Redis primary and replica with three
Sentinels on two hosts, two worker hosts, two transfer-server hosts, one client host (this test process).

(a) A worker host's link is cut mid-batch: its transfers are taken over by the other host once their leases
expire, resumed, each ends once, every file intact; plugged back in, its stale attempts write nothing.
(b) The Redis primary is killed mid-batch: the Sentinels promote the replica, every transfer ends once and
intact, a subscriber that stays connected sees the events go on (those it missed are counted: 0 expected),
and set-rate messages sent while there was no primary are applied exactly once. The figures (takeover time,
failover time, lost/duplicated, events missed) are printed and recorded.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from config.settings import get_settings
from tasks.client import TransferHandle, submit
from tasks.local import Service, TransferServer, Worker
from tasks.transfer import celery_app
from tests.support.files import sha256
from tests.support.hosts import RedisHA, inside, network
from tests.workers.conftest import faspq_env
from tests.workers.support import make_file, types, upload

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
HOSTS = ("ra", "rb", "w1", "w2", "s1", "s2", "c")
SIZE = 3_000_000
RATE_KBPS = 4000  # ~6 s a file
LEASE_S = 6  # longer than a failover (down-after 1 s + election): leases survive it


@pytest.fixture
def hosts(tmp_path, monkeypatch):
    """The seven hosts, Redis HA, two servers and two workers running; this thread on the client host."""
    with network(HOSTS) as net, inside(net.ns("c")):
        ha = RedisHA(net, "ra", "rb", tmp_path / "redis", secrets.token_hex(16))
        started: list[Service] = []
        try:
            env = faspq_env(
                ha.url(),
                FASPQ_REDIS_MASTER=RedisHA.MASTER,
                FASPQ_LEASE_TTL=str(LEASE_S),
                FASPQ_HEARTBEAT="0.5",
                FASPQ_REAPER_INTERVAL="0.5",
                # a server engine whose client host vanished gives up before the takeover resumes the same file
                FASP_PEER_TIMEOUT="3",
                FASP_STALL_TIMEOUT="3",
            )
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            servers = {}
            for host in ("s1", "s2"):
                workdir = tmp_path / host
                server = TransferServer(
                    workdir,
                    "alice",
                    secrets.token_urlsafe(16),
                    workdir / "docroot",
                    host=net.addr[host],
                    wrap=net.wrap(host),
                )
                started.append(server)
                servers[host] = server
            workers = {}
            for host in ("w1", "w2"):
                (tmp_path / host).mkdir()
                worker = Worker(
                    host, dict(os.environ), tmp_path / host / "worker.log", concurrency=3, wrap=net.wrap(host)
                )
                started.append(worker)
                workers[host] = worker
            for worker in workers.values():
                worker.wait_ready()
            yield net, ha, servers, workers
        finally:
            for service in started:
                service.kill()
            ha.stop()


def _batch(servers, tmp_path, name: str, count: int) -> list[tuple[TransferHandle, object, str]]:
    """``count`` uploads spread over the servers: (handle, where it lands, sha256 of the source)."""
    out = []
    hosts = list(servers.values())
    for i in range(count):
        server = hosts[i % len(hosts)]
        src = tmp_path / f"{name}{i}.bin"
        digest = make_file(src, SIZE)
        handle = submit(upload(server, [src], name, target_rate_kbps=RATE_KBPS))
        out.append((handle, server.docroot / name / src.name, digest))
    return out


def _owner_host(handle: TransferHandle, workers: dict[str, Worker]) -> str | None:
    owner = handle.status().get("owner") or ""
    pid = owner.split(":")[1] if owner.count(":") >= 2 else ""
    return next((host for host, w in workers.items() if str(w.process.pid) == pid), None)


def _moving(handle: TransferHandle) -> bool:
    """Running, a fifth of the file sent (the latest STATS among the last events)."""
    if handle.status().get("state") != "RUNNING":
        return False
    entries = handle._redis.xrevrange(handle._keys.events, count=10)
    stats = [json.loads(fields[b"e"]) for _, fields in entries if b'"STATS"' in fields[b"e"]]
    return bool(stats) and ((stats[0].get("session") or {}).get("transfer_bytes") or 0) >= SIZE // 5


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


def _ended_once(batch) -> tuple[int, int]:
    """(lost, duplicated): transfers without a successful RESULT, and RESULT events beyond one per transfer;
    every file that arrived has the source's size and sha256."""
    lost = duplicated = 0
    for handle, dest, digest in batch:
        results = [e for e in handle.events(from_start=True) if e["type"] == "RESULT"]
        lost += not results or not results[-1]["ok"]
        duplicated += max(len(results) - 1, 0)
        assert dest.stat().st_size == SIZE and sha256(dest) == digest, dest
    return lost, duplicated


def test_many_hosts(hosts, tmp_path, record) -> None:
    net, ha, servers, workers = hosts

    # (a) one worker host unplugged mid-transfer
    batch = _batch(servers, tmp_path, "a", 6)
    _wait(lambda: any(_owner_host(h, workers) == "w1" and _moving(h) for h, _, _ in batch), 60, "w1 running")
    victims = [h for h, _, _ in batch if _owner_host(h, workers) == "w1"]
    cut_at = time.time()
    net.cut("w1")
    for handle, _, _ in batch:
        assert handle.wait(timeout=120)["ok"], handle.status()
    lost_a, dup_a = _ended_once(batch)
    takeovers = []
    for handle in victims:
        events = list(handle.events(from_start=True))
        assert "TAKEOVER" in types(events)
        picked = [e for e in events if e["type"] == "PICKED" and e["time"] > cut_at]
        assert len(picked) == 1 and _pid(picked[0]["worker"]) == workers["w2"].process.pid, picked
        takeovers.append(picked[0]["time"] - cut_at)
    assert (lost_a, dup_a) == (0, 0)
    # plugged back in: the cut-off attempts find their leases gone and end without writing anything
    net.restore("w1")
    _wait(lambda: workers["w1"].log().count("] ignored") >= len(victims), 60, "w1's stale attempts ending")
    assert _ended_once(batch) == (0, 0)
    backend = celery_app(get_settings()).backend
    assert [backend.get_state(h.id) for h, _, _ in batch] == ["SUCCESS"] * len(batch)

    # (b) the Redis primary killed mid-batch
    batch = _batch(servers, tmp_path, "b", 3)
    seen: dict[str, list[dict]] = {h.id: [] for h, _, _ in batch}

    def follow(handle: TransferHandle) -> None:
        for event in TransferHandle(handle.id).events(timeout=90):
            seen[handle.id].append(event)

    followers = [threading.Thread(target=follow, args=(h,)) for h, _, _ in batch]
    for thread in followers:
        thread.start()
    _wait(lambda: all(_moving(h) for h, _, _ in batch), 60, "batch b running")
    killed = time.monotonic()
    ha.kill_primary()
    with ThreadPoolExecutor(len(batch)) as pool:  # sent while there is no primary: they land once it is back
        sent = [pool.submit(h.set_rate, RATE_KBPS + 1000) for h, _, _ in batch]
        _wait(lambda: _primary_or_none(ha) == ha.addr["replica"], 30, "failover")
        failover_s = time.monotonic() - killed
        for future in sent:
            future.result(timeout=60)
    for handle, _, _ in batch:
        assert handle.wait(timeout=120)["ok"], handle.status()
    for thread in followers:
        thread.join(30)
    lost_b, dup_b = _ended_once(batch)
    missed = lost_history = applied_twice = 0
    for handle, _, _ in batch:
        history = list(handle.events(from_start=True))
        snapshot = seen[handle.id][0]  # STATUS: where the transfer stood when the subscriber came; then the rest
        keys = [_key(e) for e in history]
        after = set(keys[keys.index(_key(snapshot["last"])) + 1 :])
        got = {_key(e) for e in seen[handle.id][1:]}
        missed += len(after - got)
        lost_history += len(got - set(keys))
        applied = [e for e in history if e["type"] == "CONTROL" and e["op"] == "set_rate"]
        assert len(applied) >= 1, f"set_rate during the failover never applied to {handle.id}: {types(history)}"
        applied_twice += len(applied) - 1
        assert [e["type"] for e in seen[handle.id]].count("RESULT") == 1
    assert (lost_b, dup_b, applied_twice) == (0, 0, 0)
    assert missed == 0, f"the subscriber missed {missed} events"
    figures = (
        f"takeover after link cut {min(takeovers):.1f}-{max(takeovers):.1f} s "
        f"({len(victims)} transfers, lease {LEASE_S} s); "
        f"Sentinel failover {failover_s:.1f} s; lost/duplicated {lost_a + lost_b}/{dup_a + dup_b}; "
        f"events missed {missed}, lost from history {lost_history}; set_rate during failover applied once each"
    )
    print(figures)
    record("worker host unplugged; Redis primary killed (Sentinel)", "queue: hosts", 0, "(none)", None, figures)


def _pid(owner: str) -> int:
    return int(owner.split(":")[1])


def _key(event: dict) -> tuple:
    return (event.get("type"), event.get("attempt"), event.get("time"))


def _primary_or_none(ha: RedisHA) -> str | None:
    try:
        return ha.primary()
    except Exception:
        return None
