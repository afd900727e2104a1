"""Real parts for the distributed tests: a redis-server per module, celery workers as subprocesses.

Each module gets its own redis-server on a free loopback port (data in tmp,
a random password, as deployments run it) and the FASPQ_* environment
pointing at it, so clients in this process and workers in child processes
read the same settings. The workers' policy lets orders read and write under
the temporary directory (where tests keep their files) and nothing else.
Workers and servers are killed with their whole process tree at teardown.
"""

from __future__ import annotations

import os
import secrets
import tempfile

import pytest

from tasks.local import RedisServer, TransferServer, Worker
from tasks.secrets import generate_key

SECRET_KEY = generate_key().decode()


def faspq_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The FASPQ_* variables of a test deployment (short leases: takeovers within seconds)."""
    env = {
        "FASPQ_REDIS_URL": redis_url,
        "FASPQ_SECRET_KEY": SECRET_KEY,
        "FASPQ_PREFIX": "t",
        "FASPQ_LEASE_TTL": "3",
        "FASPQ_HEARTBEAT": "0.5",
        "FASPQ_REAPER_INTERVAL": "0.5",
        "FASPQ_RETRY_BACKOFF": "0.5",
        "FASPQ_RETRY_BACKOFF_MAX": "2",
        "FASPQ_RESTORE_INTERVAL": "1",
        "FASPQ_READ_DIRS": tempfile.gettempdir(),
        "FASPQ_WRITE_DIRS": tempfile.gettempdir(),
        "FASPQ_CLIENT_NAME": "tests",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=secrets.token_hex(16))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def faspq(redis_server):
    """This process configured as a client of the module's Redis."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in faspq_env(redis_server.url).items():
            mp.setenv(name, value)
        yield redis_server


@pytest.fixture(scope="module")
def worker_factory(faspq, tmp_path_factory):
    """Start workers with the module's settings plus overrides; all killed at module end."""
    started: list[Worker] = []
    logs = tmp_path_factory.mktemp("workers")

    def start(
        name: str = "w",
        concurrency: int = 2,
        queues: str = "transfers",
        wait: bool = True,
        pool: str = "threads",
        **env_overrides: str,
    ) -> Worker:
        name = f"{name}{len(started)}"
        worker = Worker(
            name,
            {**os.environ, **faspq_env(faspq.url, **env_overrides)},
            logs / f"{name}.log",
            concurrency=concurrency,
            queues=queues,
            pool=pool,
        )
        started.append(worker)
        return worker.wait_ready() if wait else worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One fasp-server (quick mode, random password) for a module's tests."""
    workdir = tmp_path_factory.mktemp("fasp-server")
    srv = TransferServer(workdir, "alice", secrets.token_urlsafe(16), workdir / "docroot")
    try:
        yield srv
    finally:
        srv.kill()
