"""The queue's Lua scripts: run by EVALSHA, loaded into Redis's script cache by the Redis users that may.

The README's client ACL user may not EVAL or SCRIPT LOAD: a script of its own choosing runs alone in Redis, so
``while true do end`` would stop Redis for every worker and client until an admin's SCRIPT KILL. EVALSHA runs
only a script already in the cache, which does what it says (Redis checks the caller's ACL on every command and
key inside it too). The cache is empty after a Redis restart (and on a replica promoted before it saw a load),
so every worker keeps the scripts loaded (workers/scriptcache.py, every KEEP_INTERVAL_S), and a caller answered
NOSCRIPT loads them all if its Redis user may; one that may not waits up to LOAD_WAIT_S for a worker to, then
raises ScriptsNotLoaded.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import redis
from redis.typing import EncodableT

KEEP_INTERVAL_S = 1.0
"""How often a worker makes sure Redis has the scripts."""
LOAD_WAIT_S = 5 * KEEP_INTERVAL_S
"""How long a caller that may not load the scripts waits for a worker to."""
_RETRY_S = 0.2

_ALL: list[Script] = []


class ScriptsNotLoaded(redis.RedisError):
    """Redis has not the queue's scripts and this Redis user may not load them: no worker loaded them (none uses
    this Redis, or it restarted and none is back yet). A RedisError: Redis cannot serve this caller for now (the
    dashboard answers 503 and tries again)."""


class Script:
    """One of the queue's scripts (each module defines its own at import: a worker imports them all)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        _ALL.append(self)

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[EncodableT]) -> object:
        """The script's reply (EVALSHA); ScriptsNotLoaded if Redis has it not and this user may not load it."""
        deadline = time.monotonic() + LOAD_WAIT_S
        may_load = True
        while True:
            try:
                return client.evalsha(self.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                if time.monotonic() > deadline:
                    raise ScriptsNotLoaded(
                        f"no worker has loaded the queue's scripts into Redis within {LOAD_WAIT_S:.0f} s, and this "
                        "Redis user may only run them (EVALSHA): is any worker running?"
                    ) from None
                may_load = may_load and load(client)
                if not may_load:
                    time.sleep(_RETRY_S)


def missing(client: redis.Redis) -> list[Script]:
    """The queue's scripts Redis's cache lacks."""
    present = client.script_exists(*(script.sha for script in _ALL))
    return [script for script, there in zip(_ALL, present) if not there]


def load(client: redis.Redis, scripts: Sequence[Script] | None = None) -> bool:
    """Load ``scripts`` (all the queue's) into Redis's cache; False if this Redis user may not."""
    pipe = client.pipeline(transaction=False)
    for script in _ALL if scripts is None else scripts:
        pipe.script_load(script.source)
    try:
        pipe.execute()
    except redis.exceptions.NoPermissionError:
        return False
    return True
