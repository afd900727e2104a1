"""Settings from the environment and the retry policy's arithmetic."""
from __future__ import annotations

import random

import pytest

from config.celery import celery_config
from config.settings import RetryPolicy, Settings


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
