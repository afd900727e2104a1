"""Settings of the distributed layer, read once from the environment.

Everything a client and a worker must agree on (Redis URLs, key prefix, queue,
shared secret) comes from the same variables, so one `export` configures both.
Redis URLs may carry an ACL user and password (``redis://user:pass@host/0``)
and use TLS (``rediss://``, CA in FASPQ_REDIS_CA); they are shown only with the
password masked (``redacted``). ``sentinel://`` URLs (Celery's form: one
``sentinel://[:password@]host:port[/db]`` per Sentinel, joined by ``;``) name
the Sentinels of a replicated Redis whose current primary is FASPQ_REDIS_MASTER
(the password is the primary's; FASPQ_REDIS_SENTINEL_PASSWORD, if the
Sentinels require one, theirs). A worker reads its settings once and then
takes them out of its environment (``pin_settings``), so the programs it
starts never inherit them.
"""

from __future__ import annotations

import dataclasses
import getpass
import math
import os
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit, urlunsplit

from faspmanager.envblock import scrub_initial_environment

from .policy import Policy


class SettingsError(ValueError):
    """A FASPQ_* variable that cannot be used (the message names it)."""


@overload
def _env(name: str) -> str | None: ...
@overload
def _env(name: str, default: str) -> str: ...
def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


_N = TypeVar("_N", int, float)


def _number(kind: Callable[[str], _N], name: str, default: _N) -> _N:
    value = _env(name, str(default))
    try:
        return kind(value)
    except ValueError:
        raise SettingsError(f"{name} must be a{'n integer' if kind is int else ' number'}, got {value!r}") from None


def _float(name: str, default: float) -> float:
    return _number(float, name, default)


def _int(name: str, default: int) -> int:
    return _number(int, name, default)


def _port(name: str) -> int | None:
    """A TCP port to listen on, or None when the variable is unset (the feature is off)."""
    if _env(name) is None:
        return None
    port = _int(name, 0)
    if not 0 <= port <= 65535:
        raise SettingsError(f"{name} must be a port number (0 picks a free one), got {port}")
    return port


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _env(name, default)
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for retryable engine errors."""

    max_retries: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0
    jitter: bool = True

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds before the retry that follows the ``failures``-th failed attempt."""
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** max(failures - 1, 0))
        return delay * (rng or random).uniform(0.5, 1.0) if self.jitter else delay

    def to_dict(self) -> dict:
        return {
            "max_retries": self.max_retries,
            "backoff_s": self.backoff_s,
            "backoff_max_s": self.backoff_max_s,
            "jitter": self.jitter,
        }

    @classmethod
    def from_dict(cls, data: dict | None, base: RetryPolicy | None = None) -> RetryPolicy:
        """Overlay the keys present in ``data`` on ``base`` (per-submit overrides); ValueError for unknown keys
        and for values that would retry without end or without pause (a negative count or backoff, a
        backoff ceiling below the backoff, not a finite number)."""
        merged = (base or cls()).to_dict()
        unknown = set(data or {}) - set(merged)
        if unknown:
            raise ValueError(f"unknown retry policy keys: {sorted(unknown)}")
        merged.update(data or {})
        try:
            policy = cls(
                max_retries=int(merged["max_retries"]),
                backoff_s=float(merged["backoff_s"]),
                backoff_max_s=float(merged["backoff_max_s"]),
                jitter=bool(merged["jitter"]),
            )
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"retry policy values must be numbers: {data!r}") from None
        if not (
            policy.max_retries >= 0
            and 0 < policy.backoff_s <= policy.backoff_max_s
            and math.isfinite(policy.backoff_max_s)
        ):
            raise ValueError(
                f"retry policy: max_retries must be >= 0 and 0 < backoff_s <= backoff_max_s (finite), got "
                f"{policy.to_dict()}"
            )
        return policy

    def capped(self, limit: RetryPolicy) -> RetryPolicy:
        """This policy with no more retries than ``limit`` (the worker's FASPQ_RETRY_MAX) allows."""
        return dataclasses.replace(self, max_retries=min(self.max_retries, limit.max_retries))


@dataclass(frozen=True, repr=False)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = ""
    result_url: str = ""
    events_url: str = ""
    prefix: str = "faspq"
    queue: str = "transfers"
    ascp_path: str | None = None
    secret_key: bytes | None = field(default=None, repr=False)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_ttl_s: float = 60.0
    heartbeat_s: float = 10.0
    reaper_interval_s: float = 15.0
    visibility_timeout_s: float = 12 * 3600.0
    restore_interval_s: float = 10.0
    stream_window_bytes: int = 8 << 20
    stream_chunk_bytes: int = 256 << 10
    keep_s: int = 7 * 24 * 3600
    shutdown_handover: str = "persistent"
    progress_interval_s: float = 1.0
    no_worker_after_s: float = 10.0
    client_name: str = ""
    redis_ca: str | None = None
    redis_cert: str | None = None
    redis_key: str | None = None
    metrics_port: int | None = None
    """The worker's Prometheus endpoint (workers/metrics.py): None is off, 0 picks a free port (logged)."""
    metrics_address: str = "127.0.0.1"
    redis_master: str | None = None
    redis_sentinel_password: str | None = field(default=None, repr=False)
    policy: Policy = field(default_factory=Policy)

    def __repr__(self) -> str:
        """Without the shared key or Redis passwords: settings may end up in logs."""
        urls = {name: redacted(getattr(self, name)) for name in ("redis_url", "broker_url", "result_url", "events_url")}
        return (
            f"Settings({', '.join(f'{k}={v!r}' for k, v in urls.items())}, prefix={self.prefix!r}, "
            f"queue={self.queue!r}, client_name={self.client_name!r}, policy={self.policy!r})"
        )

    def redis_ssl(self) -> dict[str, Any]:
        """redis-py keyword arguments for ``rediss://`` URLs (certificates always verified)."""
        options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        if self.redis_ca:
            options["ssl_ca_certs"] = self.redis_ca
        if self.redis_cert:
            options.update(ssl_certfile=self.redis_cert, ssl_keyfile=self.redis_key)
        return options

    def sentinel_options(self) -> dict[str, Any]:
        """Celery's transport options (broker and result backend) for ``sentinel://`` URLs."""
        options: dict[str, Any] = {"master_name": self.redis_master}
        if self.redis_sentinel_password:
            options["sentinel_kwargs"] = {"password": self.redis_sentinel_password}
        return options

    @classmethod
    def from_env(cls) -> Settings:
        redis_url = _env("FASPQ_REDIS_URL", cls.redis_url)
        lease = _float("FASPQ_LEASE_TTL", cls.lease_ttl_s)
        settings = cls(
            redis_url=redis_url,
            broker_url=_env("FASPQ_BROKER_URL", redis_url),
            result_url=_env("FASPQ_RESULT_URL", redis_url),
            events_url=_env("FASPQ_EVENTS_URL", redis_url),
            prefix=_env("FASPQ_PREFIX", cls.prefix),
            queue=_env("FASPQ_QUEUE", cls.queue),
            ascp_path=_env("FASPQ_ASCP_PATH"),
            secret_key=_secret_key(),
            retry=RetryPolicy(
                max_retries=_int("FASPQ_RETRY_MAX", RetryPolicy.max_retries),
                backoff_s=_float("FASPQ_RETRY_BACKOFF", RetryPolicy.backoff_s),
                backoff_max_s=_float("FASPQ_RETRY_BACKOFF_MAX", RetryPolicy.backoff_max_s),
                jitter=_env("FASPQ_RETRY_JITTER", "1") not in ("0", "false", "no"),
            ),
            lease_ttl_s=lease,
            heartbeat_s=_float("FASPQ_HEARTBEAT", lease / 4),
            reaper_interval_s=_float("FASPQ_REAPER_INTERVAL", lease / 4),
            visibility_timeout_s=_float("FASPQ_VISIBILITY_TIMEOUT", cls.visibility_timeout_s),
            restore_interval_s=_float("FASPQ_RESTORE_INTERVAL", cls.restore_interval_s),
            stream_window_bytes=_int("FASPQ_STREAM_WINDOW", cls.stream_window_bytes),
            stream_chunk_bytes=_int("FASPQ_STREAM_CHUNK", cls.stream_chunk_bytes),
            keep_s=_int("FASPQ_KEEP", cls.keep_s),
            progress_interval_s=_float("FASPQ_PROGRESS_INTERVAL", cls.progress_interval_s),
            no_worker_after_s=_float("FASPQ_NO_WORKER_AFTER", cls.no_worker_after_s),
            shutdown_handover=_choice("FASPQ_SHUTDOWN_HANDOVER", cls.shutdown_handover, ("persistent", "all", "none")),
            client_name=_env("FASPQ_CLIENT_NAME") or f"{getpass.getuser()}@{socket.gethostname()}",
            redis_ca=_env("FASPQ_REDIS_CA"),
            redis_cert=_env("FASPQ_REDIS_CERT"),
            redis_key=_env("FASPQ_REDIS_KEY"),
            metrics_port=_port("FASPQ_METRICS_PORT"),
            metrics_address=_env("FASPQ_METRICS_ADDRESS", cls.metrics_address),
            redis_master=_env("FASPQ_REDIS_MASTER"),
            redis_sentinel_password=_env("FASPQ_REDIS_SENTINEL_PASSWORD"),
            policy=Policy.from_env(),
        )
        for name in ("broker_url", "result_url", "events_url"):
            if is_sentinel(getattr(settings, name)) and not settings.redis_master:
                raise SettingsError(f"FASPQ_REDIS_MASTER must name the Sentinels' primary for {redacted(redis_url)}")
        return settings

    @property
    def takeover_bound_s(self) -> float:
        """Longest time a dead owner's transfer waits before another worker resumes it."""
        return self.lease_ttl_s + self.reaper_interval_s


def _secret_key() -> bytes | None:
    """The secret shared by clients and workers: FASPQ_SECRET_KEY or the file FASPQ_SECRET_KEY_FILE."""
    key = _env("FASPQ_SECRET_KEY")
    if key:
        return key.encode()
    path = _env("FASPQ_SECRET_KEY_FILE")
    if path:
        try:
            return Path(path).read_bytes().strip()
        except OSError as exc:
            raise SettingsError(f"FASPQ_SECRET_KEY_FILE {path!r} cannot be read: {exc.strerror}") from None
    return None


_pinned: list[Settings] = []

CHILD_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "PYTHONPATH",
    "FASP_KNOWN_HOSTS",
    "FASP_REMOTE_COMMAND",
    "FASPMANAGER_ASCP",
    "FASPMANAGER_START_TIMEOUT",
    "FASPMANAGER_WARM",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
"""What a worker keeps in its environment (which its engines and ``-e`` programs inherit), besides LC_*
and the names listed in FASPQ_CHILD_ENV."""


def get_settings() -> Settings:
    return _pinned[0] if _pinned else Settings.from_env()


def pin_settings() -> Settings:
    """Read the settings once and keep them in memory, then strip the environment of everything but
    CHILD_ENV: the shared key, Redis URLs and passwords, policy and any other secret of the worker's
    environment never reach an engine or a ``-e`` program (faspmanager passes os.environ on). Then confine
    the engines to the policy's directories (Policy.engine_environment)."""
    if not _pinned:
        _pinned.append(Settings.from_env())
        _keep.update(CHILD_ENV, (n.strip() for n in os.environ.get("FASPQ_CHILD_ENV", "").split(",") if n.strip()))
        strip_environment()
        scrub_initial_environment(lambda name: name not in _keep and not name.startswith("LC_"))
        confinement = _pinned[0].policy.engine_environment()
        os.environ.update(confinement)  # the policy's, set after the scrub: never one the worker inherited
        _keep.update(confinement)
    return _pinned[0]


_keep: set[str] = set()


def strip_environment() -> None:
    """Drop from os.environ what pin_settings did not keep (also what Celery sets later, CELERY_LOG_*)."""
    if _pinned:
        for name in list(os.environ):
            if name not in _keep and not name.startswith("LC_"):
                os.environ.pop(name, None)


def is_sentinel(url: str) -> bool:
    return url.startswith("sentinel://")


def redacted(url: str) -> str:
    """``url`` with its password (if any) masked, for logs and screens (each Sentinel of a ``;`` list)."""
    if is_sentinel(url):
        return ";".join(_redacted_one(part) for part in url.split(";"))
    return _redacted_one(url)


def _redacted_one(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
