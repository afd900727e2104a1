"""One Redis client per URL and process (clients are thread-safe pools), and its replies read as typed values.

``rediss://`` URLs get verified TLS with the deployment's CA (FASPQ_REDIS_CA);
``redis://user:password@host/db`` URLs authenticate as that ACL user. The
clients return bytes; redis-py's annotations say any reply type, so replies are
read through ``text`` and ``stream_entries`` rather than cast at each call.
"""

from __future__ import annotations

import os
import threading
from typing import Any, cast

import redis

from config.settings import get_settings

_clients: dict[tuple[int, str], redis.Redis] = {}
_lock = threading.Lock()


def redis_for(url: str) -> redis.Redis:
    key = (os.getpid(), url)
    with _lock:
        client = _clients.get(key)
        if client is None:
            tls = get_settings().redis_ssl() if url.startswith("rediss://") else {}
            client = _clients[key] = redis.Redis.from_url(url, health_check_interval=30, **tls)
        return client


def text(value: object, errors: str = "strict") -> str:
    """A string reply (bytes from these clients) as text; TypeError for any other reply."""
    if isinstance(value, bytes):
        return value.decode(errors=errors)
    if isinstance(value, str):
        return value
    raise TypeError(f"not a Redis string reply: {value!r}")


def stream_entries(entries: object) -> list[tuple[str, dict[bytes, bytes]]]:
    """An XRANGE reply (or one stream's part of an XREAD reply) as (entry id, fields)."""
    return [(text(entry_id), fields) for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], entries)]


def read_entries(reply: object) -> list[tuple[str, dict[bytes, bytes]]]:
    """The entries of an XREAD reply on one stream (none when the read timed out)."""
    return stream_entries(cast(list[list[Any]], reply)[0][1]) if reply else []
