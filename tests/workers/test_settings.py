"""Settings from the environment and the retry policy's arithmetic."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from config.celery import celery_config
from config.settings import RetryPolicy, Settings, SettingsError, redacted


def test_one_redis_url_serves_everything_unless_split(monkeypatch):
    for name in ("FASPQ_BROKER_URL", "FASPQ_RESULT_URL", "FASPQ_EVENTS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FASPQ_REDIS_URL", "redis://10.0.0.1:7000/3")
    monkeypatch.setenv("FASPQ_EVENTS_URL", "redis://10.0.0.2:7000/0")
    monkeypatch.setenv("FASPQ_LEASE_TTL", "40")
    settings = Settings.from_env()
    assert settings.broker_url == settings.result_url == "redis://10.0.0.1:7000/3"
    assert settings.events_url == "redis://10.0.0.2:7000/0"
    assert settings.heartbeat_s == 10 and settings.takeover_bound_s == 50 <= 120


def test_defaults_bound_takeover_under_two_minutes(monkeypatch):
    for name in ("FASPQ_LEASE_TTL", "FASPQ_REAPER_INTERVAL", "FASPQ_HEARTBEAT"):
        monkeypatch.delenv(name, raising=False)
    assert Settings.from_env().takeover_bound_s <= 120


def test_celery_is_configured_for_long_transfers():
    conf = celery_config(Settings(broker_url="redis://x", result_url="redis://x"))
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] >= 3600


def test_bad_choice_is_refused(monkeypatch):
    monkeypatch.setenv("FASPQ_SHUTDOWN_HANDOVER", "sometimes")
    with pytest.raises(ValueError, match="FASPQ_SHUTDOWN_HANDOVER"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("FASPQ_RATE_CAPS", "transfers=abc", "FASPQ_RATE_CAPS: transfers='abc'"),
        ("FASPQ_RATE_CAPS", "transfers", "FASPQ_RATE_CAPS: transfers=''"),
        ("FASPQ_POLICY_FILE", "/nonexistent/policy.json", "FASPQ_POLICY_FILE '/nonexistent/policy.json'"),
        ("FASPQ_POLICY_FILE", "{bad", "FASPQ_POLICY_FILE"),
    ],
)
def test_a_bad_policy_value_is_one_line_naming_its_variable(tmp_path, name, value, said):
    """faspq (any command: clients read the policy too) says which variable is wrong, in one line, exit 1."""
    if value == "{bad":
        (tmp_path / "bad.json").write_text(value)
        value = str(tmp_path / "bad.json")
    env = {**os.environ, name: value, "FASPQ_SECRET_KEY": "k" * 43}
    run = subprocess.run(
        [sys.executable, "-c", "from tasks.cli import main; main()", "policy"], env=env, capture_output=True, timeout=60
    )
    err = run.stderr.decode()
    assert run.returncode == 1 and said in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_metrics_are_off_unless_a_port_is_given_and_loopback_by_default(monkeypatch):
    monkeypatch.delenv("FASPQ_METRICS_PORT", raising=False)
    monkeypatch.delenv("FASPQ_METRICS_ADDRESS", raising=False)
    settings = Settings.from_env()
    assert settings.metrics_port is None and settings.metrics_address == "127.0.0.1"
    monkeypatch.setenv("FASPQ_METRICS_PORT", "0")
    assert Settings.from_env().metrics_port == 0
    for bad in ("http", "70000", "-1"):
        monkeypatch.setenv("FASPQ_METRICS_PORT", bad)
        with pytest.raises(ValueError, match="FASPQ_METRICS_PORT"):
            Settings.from_env()


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(max_retries=5, backoff_s=1.0, backoff_max_s=8.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 8, 8]
    jittered = RetryPolicy(backoff_s=1.0, backoff_max_s=8.0)
    rng = random.Random(7)
    delays = [jittered.delay(3, rng) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 100


def test_per_submit_overrides_and_unknown_keys():
    base = RetryPolicy(max_retries=5, backoff_s=2.0)
    policy = RetryPolicy.from_dict({"max_retries": 1}, base)
    assert (policy.max_retries, policy.backoff_s) == (1, 2.0)
    assert RetryPolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(ValueError):
        RetryPolicy.from_dict({"retries": 3}, base)


@pytest.mark.parametrize(
    "override",
    [
        {"max_retries": 10**9, "backoff_s": 0, "backoff_max_s": 0},  # ~50 attempts a second, for ever
        {"backoff_s": -10},
        {"max_retries": -1},
        {"backoff_s": 5, "backoff_max_s": 1},
        {"backoff_max_s": float("inf")},
        {"backoff_s": float("nan")},
        {"max_retries": "many"},
    ],
)
def test_retry_overrides_that_would_loop_are_refused(override):
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy.from_dict(override, RetryPolicy())


def test_a_workers_retry_max_caps_an_orders():
    worker = RetryPolicy(max_retries=2, backoff_s=1.0)
    assert RetryPolicy.from_dict({"max_retries": 10**9}, worker).capped(worker).max_retries == 2
    assert RetryPolicy.from_dict({"max_retries": 1}, worker).capped(worker).max_retries == 1


def test_policy_from_file_and_environment_and_what_it_lets_through(monkeypatch, tmp_path):
    import json
    import os

    from click.testing import CliRunner

    import faspmanager as fm
    from config.policy import Policy, PolicyError
    from tasks.cli import main

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    outbox.mkdir()
    (inbox / "link").symlink_to("/etc")
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(
        json.dumps(
            {
                "read_dirs": [str(inbox)],
                "rate_caps": {"*": 1000},
                "extra_options": ["-v"],
                "allow_ignore_host_key": True,
            }
        )
    )
    monkeypatch.setenv("FASPQ_POLICY_FILE", str(policy_file))
    monkeypatch.setenv("FASPQ_WRITE_DIRS", str(outbox))
    monkeypatch.setenv("FASPQ_RATE_CAPS", "fast=90000")  # the environment wins over the file
    policy = Policy.from_env()
    assert policy.read_dirs == (str(inbox),) and policy.write_dirs == (str(outbox),)
    assert policy.rate_cap("fast") == 90000 and policy.rate_cap("other") is None and policy.allow_ignore_host_key
    monkeypatch.delenv("FASPQ_RATE_CAPS")
    assert Policy.from_env().rate_cap("other") == 1000

    def up(path, **opts):
        return fm.FileUpload(
            source_paths=[str(path)], dest_user="u", dest_host="h", dest_pass="p", options=fm.TransferOptions(**opts)
        )

    policy.check_order(up(inbox / "a.bin", extra_options=["-v"]), "FileUpload", "fast")
    for path, rule in ((inbox / "link" / "passwd", "FASPQ_READ_DIRS"), (inbox / ".." / "x", "FASPQ_READ_DIRS")):
        with pytest.raises(PolicyError, match=rule):
            policy.check_order(up(path), "FileUpload", "fast")
    with pytest.raises(PolicyError, match="FASPQ_EXTRA_OPTIONS"):
        policy.check_order(up(inbox / "a.bin", extra_options=["-v", "--x"]), "FileUpload", "fast")
    down = fm.FileDownload(
        source_paths=["r"],
        source_user="u",
        source_host="h",
        source_pass="p",
        dest_paths=["../../escape"],
        options=fm.TransferOptions(destination_root=str(outbox)),
    )
    with pytest.raises(PolicyError, match="FASPQ_WRITE_DIRS.*dest_path"):
        policy.check_order(down, "FileDownload", "fast")
    monkeypatch.setenv("FASPQ_RATE_CAPS", "fast=90000")
    shown = json.loads(CliRunner().invoke(main, ["policy"]).output)
    assert shown["FASPQ_READ_DIRS"] == [str(inbox)] and shown["FASPQ_RATE_CAPS"] == {"fast": 90000}
    assert shown["FASPQ_ALLOW_IGNORE_HOST_KEY"] is True and os.sep in shown["FASPQ_WRITE_DIRS"][0]


def test_worker_keeps_its_settings_and_strips_its_environment(monkeypatch):
    import config.settings as cs

    monkeypatch.setattr(cs, "_pinned", [])
    monkeypatch.setattr(cs, "_keep", set())
    monkeypatch.setenv("FASPQ_SECRET_KEY", "k" * 32)
    monkeypatch.setenv("FASPQ_REDIS_URL", "redis://:hunter2hunter2@10.0.0.9:6379/0")
    monkeypatch.setenv("FASPQ_CHILD_ENV", "KEEP_ME")
    monkeypatch.setenv("KEEP_ME", "1")
    monkeypatch.setenv("SOME_TOKEN", "x")
    saved = dict(os.environ)
    try:
        pinned = cs.pin_settings()
        assert cs.get_settings() is pinned and pinned.secret_key == b"k" * 32
        assert "FASPQ_SECRET_KEY" not in os.environ and "FASPQ_REDIS_URL" not in os.environ
        assert "SOME_TOKEN" not in os.environ and os.environ["KEEP_ME"] == "1" and "PATH" in os.environ
        assert "hunter2" not in repr(pinned.secret_key) + cs.redacted(pinned.redis_url)
        assert "k" * 32 not in repr(pinned) and "hunter2" not in repr(pinned) and "10.0.0.9" in repr(pinned)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_rediss_urls_get_verified_tls_with_the_deployments_ca(monkeypatch, tmp_path):
    import ssl

    from tasks.store.redisconn import redis_for

    ca = tmp_path / "ca.pem"
    monkeypatch.setenv("FASPQ_REDIS_URL", "rediss://worker:pw@redis.example.org:6380/0")
    monkeypatch.setenv("FASPQ_REDIS_CA", str(ca))
    settings = Settings.from_env()
    conf = celery_config(settings)
    for name in ("broker_use_ssl", "redis_backend_use_ssl"):
        assert conf[name] == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(ca)}
    pool = redis_for(settings.events_url).connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["ssl_ca_certs"] == str(ca) and pool.connection_kwargs["password"] == "pw"
    assert "broker_use_ssl" not in celery_config(Settings(broker_url="redis://x", result_url="redis://x"))


SENTINELS = "sentinel://:pw@10.0.0.1:26379/2;sentinel://10.0.0.2:26379/2;sentinel://10.0.0.3:26380/2"


def test_sentinel_urls_need_the_primarys_name(monkeypatch):
    for name in ("FASPQ_BROKER_URL", "FASPQ_RESULT_URL", "FASPQ_EVENTS_URL", "FASPQ_REDIS_MASTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FASPQ_REDIS_URL", SENTINELS)
    with pytest.raises(SettingsError, match="FASPQ_REDIS_MASTER") as refused:
        Settings.from_env()
    assert "pw" not in str(refused.value)


def test_sentinel_urls_configure_celery_and_the_store_alike(monkeypatch):
    """Celery's Sentinel transport and backend get the primary's name (and the Sentinels' password); the store's
    client asks the same Sentinels for the same primary, with the URL's password and db; logs show no password."""
    from redis.sentinel import SentinelConnectionPool

    from tasks.store.redisconn import redis_for

    for name in ("FASPQ_BROKER_URL", "FASPQ_RESULT_URL", "FASPQ_EVENTS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FASPQ_REDIS_URL", SENTINELS)
    monkeypatch.setenv("FASPQ_REDIS_MASTER", "prod")
    monkeypatch.setenv("FASPQ_REDIS_SENTINEL_PASSWORD", "spw")
    settings = Settings.from_env()
    conf = celery_config(settings)
    expected = {"master_name": "prod", "sentinel_kwargs": {"password": "spw"}}
    assert conf["broker_url"] == conf["result_backend"] == SENTINELS
    assert conf["broker_transport_options"].items() >= expected.items()
    assert conf["result_backend_transport_options"] == expected
    assert "pw" not in repr(settings).replace("***", "")
    assert redacted(SENTINELS) == SENTINELS.replace(":pw@", ":***@")

    pool = redis_for(settings.events_url).connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "prod"
    assert pool.connection_kwargs["password"] == "pw" and pool.connection_kwargs["db"] == 2
    manager = pool.sentinel_manager
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in manager.sentinels
    ] == [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26380)]
    assert all(s.connection_pool.connection_kwargs["password"] == "spw" for s in manager.sentinels)
    assert pool.connection_kwargs["retry"].get_retries() > 10  # a failover's seconds are ridden out


def test_plain_urls_have_no_replica_to_wait_for(monkeypatch):
    """Without Sentinel, ``replicated`` is true at once and writes nothing (a single Redis has nothing to wait for)."""
    import redis

    from tasks.store.redisconn import replicated

    client = redis.Redis(port=1)  # never connected: any command would fail
    assert replicated(client, "t:status:x")
