"""The transfer lease: who runs a transfer.

A lease is ``SET <prefix>:lease:<id> <owner> NX PX ttl``: while its owner
renews it (workers/heartbeat.py), no other delivery of the same task runs the
transfer (however late the broker redelivers it); when the owner dies the lease
expires and the reaper (workers/reaper.py) hands the transfer to another
worker, which resumes. Renewal and release only act on the caller's own lease
(fencing): a worker that lost its lease learns it at the next heartbeat and
stops. A client takes the lease too, to end a transfer that no worker runs
(``claim_waiting``): a worker that receives its message later finds it taken.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import redis

from .keys import Keys, watch_key
from .redisconn import text
from .scripts import Script

_RENEW = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  return 1
end
return 0
""")
_CLAIM_WAITING = Script("""
local state = redis.call('HGET', KEYS[1], 'state')
if (state == 'QUEUED' or state == 'RETRYING') and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
""")
_RELEASE = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""")


def new_owner_token() -> str:
    """Names the holder (host, pid) for operators and is unique per attempt."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """``owner``'s lease of ``keys.transfer_id`` (a fresh owner token unless given)."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: float, owner: str | None = None):
        self._redis = client
        self.keys = keys
        self._ttl_ms = int(ttl_s * 1000)
        self.ttl_s = ttl_s
        self.owner = owner or new_owner_token()

    def _deadline(self) -> float:
        return time.time() + self.ttl_s

    def acquire(self) -> bool:
        if not self._redis.set(self.keys.lease, self.owner, nx=True, px=self._ttl_ms):
            return False
        self._redis.zadd(watch_key(self.keys.prefix), {self.keys.transfer_id: self._deadline()})
        return True

    def claim_waiting(self) -> bool:
        """Take the lease of a transfer no worker runs (waiting in the queue or for a retry), atomically."""
        return bool(_CLAIM_WAITING(self._redis, [self.keys.status, self.keys.lease], [self.owner, self._ttl_ms]))

    def renew(self) -> bool:
        return bool(
            _RENEW(
                self._redis,
                [self.keys.lease, watch_key(self.keys.prefix)],
                [self.owner, self._ttl_ms, self._deadline(), self.keys.transfer_id],
            )
        )

    def release(self) -> None:
        _RELEASE(self._redis, [self.keys.lease], [self.owner])

    def holder(self) -> str | None:
        value = self._redis.get(self.keys.lease)
        return text(value) if value else None
