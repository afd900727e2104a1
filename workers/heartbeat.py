"""The lease heartbeat: a running transfer's owner renews its lease (tasks/store/lease.py) on a thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from tasks.store.lease import Lease

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews a lease every ``interval_s`` on its own thread; calls ``on_lost`` once if it is lost."""

    def __init__(self, lease: Lease, interval_s: float, on_lost: Callable[[], None]) -> None:
        self._lease = lease
        self._interval = interval_s
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.owner}", daemon=True)
        self.lost = False

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
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
