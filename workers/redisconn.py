"""One Redis client per URL and process (clients are thread-safe pools)."""
from __future__ import annotations

import os
import threading

import redis

_clients: dict[tuple[int, str], redis.Redis] = {}
_lock = threading.Lock()


def redis_for(url: str) -> redis.Redis:
    key = (os.getpid(), url)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = redis.Redis.from_url(url, health_check_interval=30)
        return client
