"""Real parts for the distributed tests: a redis-server per module, celery workers as subprocesses.

Each module gets its own redis-server on a free loopback port (data in tmp),
and the FASPQ_* environment pointing at it, so clients in this process and
workers in child processes read the same settings. Workers are real
``celery -A workers.app worker`` processes in their own process group, killed
(and reaped) at teardown.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tasks.secrets import generate_key
from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else shutil.which("redis-server")
SECRET_KEY = generate_key().decode()


@dataclass
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@contextmanager
def start_redis(workdir: Path):
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--save", "", "--appendonly", "no", "--protected-mode", "no"],
                            stdout=open(workdir / "redis.log", "wb"), stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start: " + (workdir / "redis.log").read_text())
                time.sleep(0.05)
        client.close()
        yield RedisServer(f"redis://127.0.0.1:{port}/0", port, proc)
    finally:
        proc.kill()
        proc.wait()


def faspq_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The FASPQ_* variables of a test deployment (short leases: takeovers in seconds)."""
    env = {
        "FASPQ_REDIS_URL": redis_url,
        "FASPQ_SECRET_KEY": SECRET_KEY,
        "FASPQ_PREFIX": "t",
        "FASPQ_LEASE_TTL": "3",
        "FASPQ_HEARTBEAT": "0.5",
        "FASPQ_REAPER_INTERVAL": "0.5",
        "FASPQ_RETRY_BACKOFF": "0.3",
        "FASPQ_RETRY_BACKOFF_MAX": "2",
        "FASPQ_RESTORE_INTERVAL": "1",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with start_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def faspq(redis_server):
    """This process configured as a client of the module's Redis."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in faspq_env(redis_server.url).items():
            mp.setenv(name, value)
        yield redis_server


class Worker:
    """A ``celery -A workers.app worker`` subprocess in its own process group."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path, concurrency: int = 2,
                 queues: str = "transfers", pool: str = "threads"):
        self.name = name
        self.log_path = log_path
        cmd = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-n", f"{name}@%h",
               "-P", pool, "-c", str(concurrency), "-Q", queues, "-l", "INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=open(log_path, "wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30) -> "Worker":
        deadline = time.monotonic() + timeout
        while b" ready." not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker {self.name} did not start:\n{self.log()}")
            time.sleep(0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole group: the worker, its pool and its engine processes, no goodbye."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def stop(self, timeout: float = 20) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL of whatever is left of the group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@pytest.fixture(scope="module")
def worker_factory(faspq, tmp_path_factory):
    """Start workers with the module's settings (plus overrides); all stopped at module end."""
    started: list[Worker] = []
    logs = tmp_path_factory.mktemp("workers")

    def start(name: str = "w", concurrency: int = 2, **env_overrides: str) -> Worker:
        env = {**os.environ, **faspq_env(faspq.url, **env_overrides), "PYTHONPATH": str(REPO_ROOT)}
        worker = Worker(f"{name}{len(started)}", env, logs / f"{name}{len(started)}.log", concurrency)
        started.append(worker)
        return worker.wait_ready()

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()
