"""Flower (its own HTTP API, fed by the workers' task events) shows what faspq shows: PROGRESS with bytes, rate
and ETA while a transfer runs, FAILURE with TransferFailed and the engine's code when it is cancelled."""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request

import pytest

from tasks.client import submit
from tasks.local import Service
from tests.support.ports import free_port

from .conftest import faspq_env
from .support import make_file, upload

pytestmark = pytest.mark.timeout(150)
pytest.importorskip("flower")


@pytest.fixture(scope="module")
def flower(faspq, tmp_path_factory):
    port, password = free_port(), secrets.token_hex(8)
    env = {**os.environ, **faspq_env(faspq.url)}
    service = Service(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
            f"--basic-auth=ops:{password}",
        ],
        tmp_path_factory.mktemp("flower") / "flower.log",
        env=env,
    )
    auth = "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()

    def get(path: str) -> dict | None:
        """Flower's JSON answer, or None while it does not know (404) or does not listen yet."""
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": auth})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return json.loads(reply.read())
        except (urllib.error.HTTPError, ConnectionError, urllib.error.URLError) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code != 404:
                raise
            return None

    deadline = time.monotonic() + 30
    while get("/api/workers") is None:
        assert time.monotonic() < deadline and service.process.poll() is None, service.log()[-3000:]
        time.sleep(0.3)
    try:
        yield get
    finally:
        service.kill()


def test_flower_shows_progress_then_failure_of_a_cancelled_transfer(flower, worker_factory, server, tmp_path):
    worker_factory("fl", concurrency=1, FASPQ_PROGRESS_INTERVAL="0.3")
    src = tmp_path / "fl.bin"
    size = 4_000_000
    make_file(src, size)
    handle = submit(upload(server, [src], "fl", target_rate_kbps=4000, precalculate_job_size=True))
    seen = []
    deadline = time.monotonic() + 60
    while True:
        info = flower(f"/api/task/info/{handle.id}")
        if info:
            seen.append((info["state"], info["result"]))
            if info["state"] == "PROGRESS" and not info["result"].startswith("0/"):
                break
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    moved, total = info["result"].split(" bytes")[0].split("/")
    assert 0 < int(moved) < size and int(total) == size and "kbps" in info["result"], info
    handle.cancel()
    result = handle.wait(timeout=60)
    assert result["code"] == 28
    deadline = time.monotonic() + 20
    while (info := flower(f"/api/task/info/{handle.id}"))["state"] != "FAILURE":
        assert time.monotonic() < deadline, info
        time.sleep(0.2)
    assert "TransferFailed" in info["exception"] and "28" in info["exception"], info
    assert server.password not in str(info)
