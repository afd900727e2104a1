"""One Redis client per URL and process (clients are thread-safe pools).

``rediss://`` URLs get verified TLS with the deployment's CA (FASPQ_REDIS_CA);
``redis://user:password@host/db`` URLs authenticate as that ACL user.
"""
from __future__ import annotations

import os
import threading

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
