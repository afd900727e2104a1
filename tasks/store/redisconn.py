"""One Redis client per URL and process (clients are thread-safe pools), and its replies read as typed values.

``rediss://`` URLs get verified TLS with the deployment's CA (FASPQ_REDIS_CA);
``redis://user:password@host/db`` URLs authenticate as that ACL user. The
clients return bytes; redis-py's annotations say any reply type, so replies are
read through ``text`` and ``stream_entries`` rather than cast at each call.

``sentinel://`` URLs (Celery's form, one per Sentinel joined by ``;``) give a
client of the primary the Sentinels name (FASPQ_REDIS_MASTER). A failover shows
as ConnectionError (the old primary gone, or demoted: redis-py turns its
ReadOnlyError into one); the client asks the Sentinels again and retries the
command with bounded exponential backoff for about FAILOVER_RETRY_S, so callers
ride a failover out as they ride out a restart. A retried write may have been
applied before the reply was lost: what is written so is idempotent or told
apart (control messages by their sender's sequence, leases by owner token).

Replication is asynchronous: a write the primary acknowledged may not have
reached a replica when it dies, and the promoted replica never had it.
:func:`replicated` (WAIT) closes that window where a loss would matter (the
pickup, the end of a transfer, a control message, a submission): it returns
once a replica holds everything written so far, or says it could not.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from config.settings import Settings, get_settings, is_sentinel

FAILOVER_RETRY_S = 30.0
"""How long a command on a Sentinel-managed client keeps retrying (Sentinel's failover takes down-after-milliseconds
plus an election: seconds)."""
REPLICATION_WAIT_MS = 2000
"""How long :func:`replicated` waits for a replica's acknowledgement."""
_BACKOFF_CAP_S, _BACKOFF_BASE_S = 1.0, 0.05

_clients: dict[tuple[int, str], redis.Redis] = {}
_lock = threading.Lock()


def redis_for(url: str) -> redis.Redis:
    key = (os.getpid(), url)
    with _lock:
        client = _clients.get(key)
        if client is None:
            settings = get_settings()
            if is_sentinel(url):
                client = _sentinel_client(url, settings)
            else:
                tls = settings.redis_ssl() if url.startswith("rediss://") else {}
                client = redis.Redis.from_url(url, health_check_interval=30, **tls)
            _clients[key] = client
        return client


class _PrimaryConnection(SentinelManagedConnection):
    """Asks the Sentinels where the primary is at every (re)connection. redis-py (8.1) reconnects a connection
    dropped mid-command (the retry of that command) through ``connect_check_health``, which goes back to the old
    address: a dead primary's, for the whole retry."""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if not self._sock and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)


def _sentinel_client(url: str, settings: Settings) -> redis.Redis:
    """A client of the current primary behind the Sentinels of ``url`` (password and db: the first that says)."""
    sentinels: list[tuple[str, int]] = []
    auth: dict[str, Any] = {}
    for part in url.split(";"):
        parts = urlsplit(part)
        sentinels.append((parts.hostname or "127.0.0.1", parts.port or 26379))
        if parts.password and "password" not in auth:
            auth.update(password=unquote(parts.password), username=unquote(parts.username) if parts.username else None)
        if parts.path.strip("/") and "db" not in auth:
            auth["db"] = int(parts.path.strip("/"))
    sentinel_auth = {"password": settings.redis_sentinel_password} if settings.redis_sentinel_password else {}
    sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": 1.0, **sentinel_auth}, socket_connect_timeout=2.0)
    retries = 5 + int(FAILOVER_RETRY_S / _BACKOFF_CAP_S)  # 0.1, 0.2, 0.4, 0.8, then 1 s apart
    return sentinel.master_for(
        settings.redis_master or "",
        health_check_interval=30,
        connection_class=_PrimaryConnection,
        retry=Retry(ExponentialBackoff(cap=_BACKOFF_CAP_S, base=_BACKOFF_BASE_S), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError],
        **auth,
    )


def replicated(client: redis.Redis, mark_key: str, timeout_ms: int = REPLICATION_WAIT_MS) -> bool:
    """Whether a replica holds every write made so far (through any connection): WAIT 1 after a small write of
    our own (``<mark_key>``'s ``synced`` field: WAIT counts from its connection's last write). True too when
    there is no replica to wait for: a Redis Sentinel does not manage, or a primary the Sentinels see no live
    replica of (after a failover that lost the other node: a later failover would have nothing to promote)."""
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return True
    pipe = client.pipeline(transaction=False)
    pipe.hset(mark_key, "synced", repr(time.time()))
    pipe.wait(1, timeout_ms)
    if pipe.execute()[-1]:
        return True
    return not pool.sentinel_manager.discover_slaves(pool.service_name)  # replicas the Sentinels see up


def durable(
    client: redis.Redis, mark_key: str, present: Callable[[], bool], write: Callable[[], object], limit_s: float
) -> bool:
    """After ``write()``: wait until a replica holds it; while none does, ask the primary (a new one after a
    failover) whether it is ``present`` and write it again if not. The write must be idempotent or told apart
    by its reader. False if no replica acknowledged within about ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not replicated(client, mark_key):
        if time.monotonic() > deadline:
            return False
        if not present():
            write()
    return True


def permission_refused(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: kombu wraps redis-py's errors) is Redis refusing this ACL user a command
    or key: the server answered, so it is not an outage. redis-py drops the NOPERM prefix when it maps the reply."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, redis.exceptions.NoPermissionError) or "NOPERM" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def redis_user(url: str) -> str:
    """The ACL user a Redis URL logs in as (``default`` without one)."""
    return unquote(urlsplit(url.split(";")[0]).username or "") or "default"


def text(value: object, errors: str = "strict") -> str:
    """A string reply (bytes from these clients) as text; TypeError for any other reply."""
    if isinstance(value, bytes):
        return value.decode(errors=errors)
    if isinstance(value, str):
        return value
    raise TypeError(f"not a Redis string reply: {value!r}")


def stream_entries(entries: object) -> list[tuple[str, dict[bytes, bytes]]]:
    """An XRANGE reply as (entry id, fields)."""
    return [(text(entry_id), fields) for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], entries)]
