"""The transfer lease: who runs a transfer, kept alive by a heartbeat.

A lease is ``SET <prefix>:lease:<id> <owner> NX PX ttl``: while its owner
renews it, no other delivery of the same task runs the transfer (however late
the broker redelivers it); when the owner dies the lease expires and the
reaper (workers/reaper.py) hands the transfer to another worker, which resumes.
Renewal and release only act on the caller's own lease (fencing): a worker
that lost its lease learns it at the next heartbeat and stops.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import redis

from .keys import Keys, watch_key

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def new_owner_token() -> str:
    """Names the holder (host, pid) for operators and is unique per attempt."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: float, owner: str | None = None):
        self._redis = client
        self.keys = keys
        self._ttl_ms = int(ttl_s * 1000)
        self.ttl_s = ttl_s
        self.owner = owner or new_owner_token()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def _deadline(self) -> float:
        return time.time() + self.ttl_s

    def acquire(self) -> bool:
        if not self._redis.set(self.keys.lease, self.owner, nx=True, px=self._ttl_ms):
            return False
        self._redis.zadd(watch_key(self.keys.prefix), {self.keys.transfer_id: self._deadline()})
        return True

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.keys.lease, watch_key(self.keys.prefix)],
                                args=[self.owner, self._ttl_ms, self._deadline(), self.keys.transfer_id]))

    def release(self) -> None:
        self._release(keys=[self.keys.lease], args=[self.owner])

    def holder(self) -> str | None:
        value = self._redis.get(self.keys.lease)
        return value.decode() if value else None


class Heartbeat:
    """Renews a lease every ``interval_s`` on its own thread; calls ``on_lost`` once if it is lost."""

    def __init__(self, lease: Lease, interval_s: float, on_lost):
        self._lease = lease
        self._interval = interval_s
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.owner}", daemon=True)
        self.lost = False

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                alive = self._lease.renew()
            except redis.RedisError as exc:
                log.warning("lease renewal failed (will retry): %s", exc)
                continue
            if not alive:
                self.lost = True
                log.error("lease of %s lost; stopping the transfer", self._lease.owner)
                self._on_lost()
                return
