"""Review H4: the README's client Redis user runs no Lua of its own choosing.

Its ACL had EVAL and SCRIPT LOAD, so any holder of the client password could run any script. A script runs alone
in Redis: ``while true do end`` stops Redis for every worker and client (past lua-time-limit they are answered
BUSY) until an admin's SCRIPT KILL. The client user now runs, by EVALSHA, only the queue's scripts, which the
workers load into Redis's script cache (again after a restart, which empties it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

import faspmanager as fm
from tasks.client import TransferHandle, submit
from tasks.store.bounded import stream_has
from tasks.store.scripts import ScriptsNotLoaded
from tests.security.test_queue_redis import ReadmeDeployment, readme_deployment
from tests.support.files import assert_same_file
from tests.workers.conftest import faspq_env, server  # noqa: F401
from tests.workers.support import first, make_file, options, types, upload
from tests.workers.test_cli_errors import _one_line_error, faspq

pytestmark = pytest.mark.timeout(120)

LOOP = "while true do end"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    with readme_deployment(tmp_path_factory.mktemp("scripts"), appendonly=True) as deployment:
        yield deployment


def _eval(attacker: redis.Redis) -> object:
    return attacker.eval(LOOP, 0)


def _load_then_evalsha(attacker: redis.Redis) -> object:
    return attacker.evalsha(attacker.script_load(LOOP), 0)


def _answers(conn: redis.Redis) -> bool:
    """Whether Redis serves ``conn`` now (a command answered within its socket timeout, not BUSY)."""
    try:
        return bool(conn.ping())
    except (redis.ResponseError, redis.TimeoutError):
        return False


@pytest.mark.parametrize("attack", [_eval, _load_then_evalsha])
def test_the_client_user_cannot_stop_redis_with_a_script(deployed, attack: Callable[[redis.Redis], object]):
    """The attacker, as the README's client user, runs an endless script while a worker's connection asks Redis
    something: Redis answers the worker, and the attacker is refused."""
    deployed.admin.config_set("lua-time-limit", 100)  # a script running longer is killable (BUSY to others)
    attacker = redis.Redis.from_url(deployed.client_url)
    worker = redis.Redis.from_url(deployed.worker_url, socket_timeout=2)
    with ThreadPoolExecutor(1) as pool:
        attacking = pool.submit(attack, attacker)
        time.sleep(0.5)
        try:
            assert _answers(worker), "the client user's script stopped Redis for a worker"
        finally:
            while not attacking.done():  # the failing case: the admin ends the script
                try:
                    deployed.admin.script_kill()
                except redis.ResponseError:  # not running yet, or already over
                    time.sleep(0.1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            attacking.result()


def test_the_client_user_reads_no_whole_hash_and_asks_for_its_entry_without_reading_it(deployed):
    """HGETALL sends every field, however large (the queue reads fields through the bounded script): the client
    user has none. Whether its own control entry survived a failover it asks with :func:`stream_has`, which sends
    no byte of the entry (an entry planted at that id may be huge). (XRANGE it keeps: the bounded stream script
    calls it, and a script runs with its caller's rights.)"""
    key = "faspq:control:readwhole"
    deployed.admin.delete(key)
    small = deployed.admin.xadd(key, {"m": "x"}).decode()
    huge = deployed.admin.xadd(key, {"m": "x" * (8 << 20)}).decode()
    attacker = redis.Redis.from_url(deployed.client_url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        attacker.hgetall("faspq:status:readwhole")
    before = deployed.admin.info("stats")["total_net_output_bytes"]
    assert stream_has(attacker, key, small) and stream_has(attacker, key, huge)
    ms, seq = huge.split("-")
    assert not stream_has(attacker, key, f"{ms}-{int(seq) + 1}") and not stream_has(attacker, key, "1-0")
    assert deployed.admin.info("stats")["total_net_output_bytes"] - before < 64 << 10


def test_an_id_whose_state_a_client_made_huge_is_in_use(deployed, server, tmp_path):  # noqa: F811
    """A state too large to read is still a state: submit asks whether the field is there (hash_has), not for its
    value, so an id whose status a client's Redis user filled with 2 MB is refused like any used one."""
    attacker = redis.Redis.from_url(deployed.client_url)
    attacker.hset("faspq:status:hugestate", "state", "x" * (2 << 20))
    src = tmp_path / "hugestate.bin"
    make_file(src, 1000)
    with pytest.raises(ValueError, match="transfer id 'hugestate' is already in use"):
        submit(upload(server, [src], "hugestate"), transfer_id="hugestate")
    assert not deployed.admin.exists("faspq:order:hugestate")


def test_the_client_user_steers_transfers_through_redis_restarts(deployed, server, tmp_path):  # noqa: F811
    """A restart empties Redis's script cache. With the worker idle, its keeper loads the scripts again, so the
    client user reads on; mid-queue, it follows, steers (set_rate, add, finish, cancel) and submits across it."""
    small = tmp_path / "small.bin"
    make_file(small, 200_000)
    before = submit(upload(server, [small], "restart-before"))
    assert before.wait(timeout=60)["ok"]
    deployed.restart(down_s=1.0)
    assert before.status()["state"] == "SUCCEEDED"  # no transfer runs: the worker's keeper loaded the scripts

    src = tmp_path / "running.bin"
    make_file(src, 3_000_000)
    running = submit(upload(server, [src], "restart-running", target_rate_kbps=4000))  # about 6 s
    first(running, "STATS", timeout=30)
    (server.docroot / "added").mkdir(exist_ok=True)
    order = fm.PersistentUpload(
        dest_user=server.user,
        dest_host=server.host,
        dest_pass=server.password,
        options=options(server, destination_root="added"),
    )
    added = submit(order)  # queued behind the running one (the worker's only slot)
    deployed.restart(down_s=1.0)
    control = running.set_rate(8000)
    assert (running.verdict(control, 30) or {}).get("type") == "CONTROL"
    added.add_source(str(small), "small.bin")
    added.finish()
    cancelled = submit(upload(server, [small], "restart-cancelled"))
    assert cancelled.cancel() is not None  # a message: the client user may not take leases
    assert running.wait(timeout=60)["ok"] and added.wait(timeout=60)["ok"]
    assert cancelled.wait(timeout=60)["code"] == 28 and cancelled.status()["state"] == "CANCELLED"
    assert_same_file(src, server.docroot / "restart-running" / src.name)
    assert_same_file(small, server.docroot / "added" / "small.bin")
    assert "CONTROL" in types(running.events(from_start=True, timeout=10))


def test_without_a_worker_the_client_user_fails_saying_so(tmp_path, monkeypatch):
    """No worker has loaded the queue's scripts (none started, or none back after a restart) and the client user
    may not: a read waits for one a few seconds, then fails saying so; faspq says it in one line, exit status 1."""
    alone = ReadmeDeployment(tmp_path)  # no worker
    try:
        env = faspq_env(alone.client_url, FASPQ_PREFIX="faspq")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ScriptsNotLoaded, match="no worker has loaded the queue's scripts"):
            TransferHandle("unread").status()
        line = _one_line_error(faspq("status", "unread", env=env), "no worker has loaded the queue's scripts")
        assert "redis://faspq-client:***@127.0.0.1" in line, line
    finally:
        alone.stop()
