"""Issue 11, item 4: Redis as people deploy it — a password, an ACL user in the URL, never in a log.

The module's redis-server requires a password; the clients and the worker log
in as an ACL user named in the URL (``redis://user:pass@host/db``). Someone
reaching the port without it gets nothing, a transfer works end to end, and
neither password shows in the worker's log.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.settings import Settings
from tasks.client import NotEnqueued, TransferHandle, submit
from tasks.local import RedisServer, Worker
from tasks.schema import SIGNED_FIELDS
from tasks.transfer import send
from tests.support.files import assert_same_file
from tests.support.programs import REPO_ROOT
from tests.workers.conftest import faspq_env, server  # noqa: F401
from tests.workers.support import make_file, upload
from tests.workers.test_cli_errors import _one_line_error, _upload_args, faspq

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    admin_password, app_password = secrets.token_hex(16), secrets.token_hex(16)
    workdir = tmp_path_factory.mktemp("redis-auth")
    redis_server = RedisServer(workdir, password=admin_password)
    admin = redis.Redis(port=redis_server.port, password=admin_password)
    admin.acl_setuser(
        "faspq", enabled=True, passwords=[f"+{app_password}"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    url = f"redis://faspq:{app_password}@127.0.0.1:{redis_server.port}/0"
    worker = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in faspq_env(url).items():
                mp.setenv(name, value)
            worker = Worker("auth", dict(os.environ), workdir / "worker.log", concurrency=1).wait_ready()
            yield redis_server, worker, admin_password, app_password
    finally:
        if worker is not None:
            worker.kill()
        admin.close()
        redis_server.kill()


def test_no_password_no_access(deployment):
    redis_server = deployment[0]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=redis_server.port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=redis_server.port, username="faspq", password="guess").ping()


def test_transfer_through_a_password_protected_redis(deployment, server, tmp_path):  # noqa: F811
    _, worker, admin_password, app_password = deployment
    src = tmp_path / "auth.bin"
    make_file(src, 500_000)
    result = submit(upload(server, [src], "auth")).wait(timeout=60)
    assert result["ok"], result
    assert_same_file(src, server.docroot / "auth" / src.name)
    log = worker.log()
    assert app_password not in log and admin_password not in log


def _readme_acl() -> dict[str, list[str]]:
    """The ACL SETUSER commands the README gives, by user name (the documentation is what is tested)."""
    text = (REPO_ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = [shlex.split(line.strip()) for line in text.splitlines() if line.strip().startswith("ACL SETUSER ")]
    return {words[2]: words for words in commands}


class ReadmeDeployment:
    """A Redis with the README's two ACL users (in its config file, as an operator keeps them: back after a
    restart) and, once started, a worker logged in as faspq-worker (its own Redis: no other worker consumes).
    ``admin`` sees what the others may not."""

    def __init__(self, workdir: Path, appendonly: bool = False) -> None:
        self._workdir, self._appendonly = workdir, appendonly
        acl = _readme_acl()
        assert set(acl) == {"faspq-client", "faspq-worker"}
        passwords = {"CLIENT_PASSWORD": secrets.token_hex(12), "WORKER_PASSWORD": secrets.token_hex(12)}
        self._users = [
            [f">{passwords[w[1:]]}" if w[1:] in passwords else w for w in words[2:]] for words in acl.values()
        ]
        self.redis = self._start(None, secrets.token_hex(16))
        self.admin = redis.Redis(port=self.redis.port, password=self.redis.password)
        url = "redis://{}:{}@127.0.0.1:" + str(self.redis.port) + "/0"
        self.client_url = url.format("faspq-client", passwords["CLIENT_PASSWORD"])
        self.worker_url = url.format("faspq-worker", passwords["WORKER_PASSWORD"])
        self.worker: Worker | None = None

    def _start(self, port: int | None, password: str | None) -> RedisServer:
        workdir = self._workdir / "redis"
        return RedisServer(workdir, port=port, password=password, appendonly=self._appendonly, users=self._users)

    def restart(self, down_s: float) -> None:
        """SIGKILL Redis, then the same port and users (and data, with ``appendonly``) ``down_s`` later."""
        self.redis.kill()
        time.sleep(down_s)
        self.redis = self._start(self.redis.port, self.redis.password)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.kill()
        self.admin.close()
        self.redis.kill()


@contextlib.contextmanager
def readme_deployment(workdir: Path, appendonly: bool = False) -> Iterator[ReadmeDeployment]:
    """A ReadmeDeployment, its worker started, this process its client (logged in as faspq-client) meanwhile."""
    deployed = ReadmeDeployment(workdir, appendonly)
    try:
        deployed.worker = Worker(
            "acl",
            {**os.environ, **faspq_env(deployed.worker_url, FASPQ_PREFIX="faspq")},
            workdir / "acl.log",
            concurrency=1,
            queues="transfers",
        ).wait_ready()
        with pytest.MonkeyPatch.context() as mp:
            for name, value in faspq_env(deployed.client_url, FASPQ_PREFIX="faspq").items():
                mp.setenv(name, value)
            yield deployed
    finally:
        deployed.stop()


@pytest.fixture(scope="module")
def readme_users(tmp_path_factory):
    """The README's deployment: yields the client's URL, the worker and an admin client."""
    with readme_deployment(tmp_path_factory.mktemp("readme-acl")) as deployed:
        yield deployed.client_url, deployed.worker, deployed.admin


def test_readme_least_privilege_users_run_a_transfer(readme_users, server, tmp_path):  # noqa: F811
    client_url, worker, _ = readme_users
    src = tmp_path / "acl.bin"
    make_file(src, 400_000)
    handle = submit(upload(server, [src], "acl"))
    control = handle.set_rate(20000)
    assert (handle.verdict(control, 30) or {}).get("type") == "CONTROL"  # the client user reads the worker's answer
    try:
        result = handle.wait(timeout=60)
    except TimeoutError:
        raise AssertionError(worker.log()[-3000:]) from None
    assert result["ok"], (result, worker.log()[-3000:])
    assert_same_file(src, server.docroot / "acl" / src.name)
    client = redis.Redis.from_url(client_url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set(f"faspq:lease:{handle.id}", "mine")  # the client user cannot take a transfer's lease
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.brpop("transfers", 1)  # nor consume the queue


def test_a_replayed_order_of_an_ended_transfer_never_runs_again(readme_users, server, tmp_path):  # noqa: F811
    """The attacker: the README's client user, without the shared key. It copies a transfer's signed order and
    its signed QUEUED event while it is queued, waits for the transfer to end, then restores them, sets the state
    back to QUEUED and pushes a task message (HSET, HSET, LPUSH: all its ACL allows). No worker runs it again."""
    client_url, worker, _ = readme_users
    src = tmp_path / "replayed.bin"
    make_file(src, 300_000)
    handle = submit(upload(server, [src], "replay"))
    attacker = redis.Redis.from_url(client_url)
    # (field by field: the client user has no HGETALL; it knows the order's fields, as an attacker would)
    saved = {n.encode(): v for n in (*SIGNED_FIELDS, "mac") if (v := attacker.hget(f"faspq:order:{handle.id}", n))}
    queued = {name: attacker.hget(f"faspq:status:{handle.id}", name) for name in ("last", "last_mac")}
    assert saved and handle.wait(timeout=60)["ok"]
    landed = server.docroot / "replay" / src.name
    assert_same_file(src, landed)
    landed.unlink()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FASPQ_SECRET_KEY")
        settings = Settings.from_env()
        assert settings.secret_key is None
        attacker.hset(f"faspq:order:{handle.id}", mapping=saved)
        attacker.hset(f"faspq:status:{handle.id}", mapping={"state": "QUEUED", **queued})
        send(settings, saved[b"type"].decode(), handle.id, "transfers")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not landed.exists() and "not run again" not in worker.log():
        time.sleep(0.2)
    assert not landed.exists(), "the replayed order ran again"
    assert f"transfer {handle.id} already ended (SUCCEEDED): its order is not run again" in worker.log()
    assert int(attacker.hget(f"faspq:status:{handle.id}", "attempt")) == 1


def test_the_readme_client_user_cancels_queued_and_running_transfers(readme_users, server, tmp_path):  # noqa: F811
    """Without rights on leases the cancel goes as a control message: a queued transfer (behind a running one on
    the only worker slot) ends CANCELLED before it starts, a running one is stopped."""
    src = tmp_path / "cancelled.bin"
    make_file(src, 4_000_000)
    running = submit(upload(server, [src], "cancel-running", target_rate_kbps=2000))  # ~16 s
    queued = submit(upload(server, [src], "cancel-queued"))
    for event in running.events(timeout=30):
        if event["type"] == "STATS":
            break
    assert queued.cancel() is not None
    assert running.cancel() is not None
    for handle in (queued, running):
        result = handle.wait(timeout=30)
        assert result["code"] == 28 and handle.status()["state"] == "CANCELLED", result
    assert not (server.docroot / "cancel-queued" / src.name).exists()


def _expires_as_ended(admin: redis.Redis, transfer_id: str, keep_s: int, within: float = 10.0) -> None:
    """Every key of ``transfer_id`` soon has an ended transfer's TTL (at most FASPQ_KEEP), its order none left."""
    deadline = time.monotonic() + within
    while True:
        ttls = {key.decode(): admin.ttl(key) for key in admin.scan_iter(match=f"*{transfer_id}*")}
        if ttls and all(0 < ttl <= keep_s for ttl in ttls.values()):
            break
        assert time.monotonic() < deadline, f"keys of {transfer_id} that stay for ever (TTL -1): {ttls}"
        time.sleep(0.2)
    assert f"faspq:order:{transfer_id}" not in ttls, ttls
    assert min(ttls.values()) > keep_s - 60, ttls  # kept from its end, as long as any ended transfer


def test_a_queue_the_client_user_may_not_push_to_leaves_nothing_queued(readme_users, server, tmp_path):  # noqa: F811
    """Finding 10: the client user's ACL lets it push to ``transfers*`` only. A submit to another queue writes the
    order and QUEUED, then the broker refuses the task message: the transfer ends FAILED "not enqueued" (never a
    QUEUED no worker receives), its sealed order is blanked, and faspq names the refusal, not an outage. What it
    wrote then expires as an ended transfer does (the client user may neither delete nor expire keys). A
    transfer to the queue it may use still runs."""
    client_url, worker, admin = readme_users
    src = tmp_path / "elsewhere.bin"
    make_file(src, 300_000)
    with pytest.raises(NotEnqueued) as caught:
        submit(upload(server, [src], "elsewhere"), queue="elsewhere")
    refused = caught.value
    assert refused.denied and refused.user == "faspq-client", refused
    status = TransferHandle(refused.transfer_id).status()
    assert status["state"] == "FAILED" and status["result"]["reason"].startswith("not enqueued: "), status
    reader = redis.Redis.from_url(client_url)
    order = {n: reader.hget(f"faspq:order:{refused.transfer_id}", n) for n in ("order", "mac")}
    assert not order["order"] and not order["mac"], "the sealed order stayed"
    proc = faspq(
        *_upload_args(server, str(src), dest="elsewhere", extra=("--queue", "elsewhere", "--id", "cli-elsewhere")),
        env={"TEST_PW": server.password},
    )
    line = _one_line_error(proc, "Redis user 'faspq-client' may not send to queue 'elsewhere'", "ended FAILED")
    assert "cannot reach" not in line
    assert TransferHandle("cli-elsewhere").status()["state"] == "FAILED"
    for transfer_id in (refused.transfer_id, "cli-elsewhere"):
        _expires_as_ended(admin, transfer_id, Settings.from_env().keep_s)
    assert submit(upload(server, [src], "allowed")).wait(timeout=60)["ok"]
    assert_same_file(src, server.docroot / "allowed" / src.name)
