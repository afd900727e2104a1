"""Recently verified passwords, so that a client logging in again and again (a worker running many small
transfers to this server) pays scrypt once every few minutes instead of once per SSH connection; and logins
that arrive together with the same password share one check (a worker's first transfers start at once, and
each would otherwise run its own scrypt before the first one is remembered).

Only a success is remembered, as a digest under a random key that lives in this process's memory alone:
HMAC-SHA256(key, password), per user and per stored hash. A wrong password never matches it and still
pays the full scrypt check and the failure delay; a changed password (a new hash after SIGHUP, or a
rehash) matches nothing remembered under the old one; entries expire after TTL_S. What it costs: someone
who can read fasp-server's memory could test guesses against a remembered digest at HMAC speed instead of
scrypt speed, for TTL_S; such a reader also sees each password in clear as it arrives, so the exposure
is that window, no more.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import Awaitable, Callable

TTL_S = 300.0
MAX_ENTRIES = 4096  # logins remembered at once; the oldest goes first


class VerifiedLogins:
    def __init__(self, ttl_s: float = TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._key = os.urandom(32)
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[bytes, float]] = {}  # (user, stored hash) -> (digest, expiry)
        self._running: dict[tuple[str, str, bytes], asyncio.Future[bool]] = {}  # (user, hash, digest) -> its check

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def recalls(self, user: str, stored_hash: str, password: str) -> bool:
        """Whether this password was verified for this user and hash within the last TTL_S."""
        entry = self._entries.get((user, stored_hash))
        if entry is None:
            return False
        digest, expiry = entry
        if self._clock() >= expiry:
            del self._entries[(user, stored_hash)]
            return False
        return hmac.compare_digest(digest, self._digest(password))

    def remember(self, user: str, stored_hash: str, password: str) -> None:
        """Note a password scrypt has just accepted."""
        self._entries.pop((user, stored_hash), None)
        while len(self._entries) >= MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
        self._entries[(user, stored_hash)] = (self._digest(password), self._clock() + self._ttl_s)

    def shared(
        self, user: str, stored_hash: str, password: str, check: Callable[[], Awaitable[bool]]
    ) -> asyncio.Future[bool]:
        """The check of this password for this user and hash: the one already running, else ``check()``
        started now (await it shielded: a waiter that gives up must not cancel it for the others). Only
        identical attempts share one: every other password still pays its own scrypt."""
        key = (user, stored_hash, self._digest(password))
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(check())
            running.add_done_callback(lambda _: self._running.pop(key, None))
        return running
