"""Keeps the queue's Lua scripts in Redis's script cache, for clients whose Redis user may only run them.

A Redis restart empties the cache (so do SCRIPT FLUSH and a failover to a replica that never saw a load): a
worker idle meanwhile would run no script, so none would load them, and every client call would wait in vain
(tasks/store/scripts.py). Each consuming worker process looks every KEEP_INTERVAL_S (SCRIPT EXISTS, one command)
and loads what is missing.
"""

from __future__ import annotations

import logging
import threading

import redis

from tasks.store.scripts import KEEP_INTERVAL_S, load, missing

log = logging.getLogger(__name__)


class ScriptKeeper(threading.Thread):
    """Reloads the queue's scripts into ``client``'s Redis whenever they are gone, until stopped."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(name="faspq-scripts", daemon=True)
        self._redis = client
        self._done = threading.Event()
        self._refused = False  # logged once

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)

    def _keep(self) -> None:
        """Load the scripts Redis lacks (logged)."""
        gone = missing(self._redis)
        if not gone:
            return
        if load(self._redis, gone):
            log.info("loaded %d of the queue's scripts into Redis's script cache", len(gone))
        elif not self._refused:
            self._refused = True
            log.error(
                "this worker's Redis user may not load the queue's scripts (SCRIPT LOAD): clients cannot run them"
            )

    def run(self) -> None:
        while True:
            try:
                self._keep()
            except redis.RedisError as exc:  # Redis restarting: loaded once it is back
                log.debug("checking the queue's scripts failed (will retry): %s", exc)
            if self._done.wait(KEEP_INTERVAL_S):
                return
