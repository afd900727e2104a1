"""Redis killed and restarted under a running transfer, with the append-only file (as the Procfile runs it): the
queue carries on and the transfer ends SUCCEEDED, every byte right."""
from __future__ import annotations

import secrets
import time

import pytest

from tasks.client import submit
from tests.faults.helpers import needs_root
from tests.support.files import assert_same_file
from tests.workers.conftest import faspq, server, worker_factory  # noqa: F401 (fixtures)
from tests.workers.support import make_file, upload
from workers.local import RedisServer

pytestmark = [needs_root, pytest.mark.timeout(150)]
SIZE = 4_000_000


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """This module's Redis, restartable in place (same port, password and data directory)."""
    workdir = tmp_path_factory.mktemp("redis")
    box = {"server": RedisServer(workdir, password=secrets.token_hex(16), appendonly=True)}

    class Restartable:
        url, password = box["server"].url, box["server"].password

        def restart(self, down_s: float) -> None:
            old = box["server"]
            old.kill()
            time.sleep(down_s)
            box["server"] = RedisServer(workdir, port=old.port, password=old.password, appendonly=True)

    try:
        yield Restartable()
    finally:
        box["server"].kill()


def _bytes(handle) -> int:
    for event in handle.events(timeout=60):
        if event["type"] == "STATS" and ((event.get("session") or {}).get("transfer_bytes") or 0) >= SIZE // 4:
            return event["session"]["transfer_bytes"]
        assert event["type"] != "RESULT", event
    raise AssertionError("no progress")


def test_redis_killed_and_restarted_mid_transfer(redis_server, worker_factory, server, tmp_path, record):
    worker_factory("r", concurrency=1)
    src = tmp_path / "through-a-redis-restart.bin"
    make_file(src, SIZE)
    handle = submit(upload(server, [src], "redis-restart", target_rate_kbps=3200))  # ~10 s
    _bytes(handle)
    redis_server.restart(down_s=1.0)
    result = handle.wait(timeout=90)
    assert result["ok"], result
    assert_same_file(src, server.docroot / "redis-restart" / src.name)
    record("Redis killed (SIGKILL) and restarted 1 s later, append-only file on", "queue", 0,
           "(none: the transfer finished SUCCEEDED)", None, "none needed: sha256 equal")
