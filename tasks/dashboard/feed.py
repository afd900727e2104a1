"""Transfers as dashboard rows, and the live feed of changed rows, from the events already in Redis.

Every event a worker or client publishes (store/events.py) also goes to the pub/sub channel of its transfer's
stream; the feed pattern-subscribes to them all, notes which transfers changed and, at most every ``interval``
seconds, reads their status hashes into rows (the status, not the event: it says the state, owner and result
that the events imply). A row is a transfer's whole current state, so a row sent twice or late does no harm;
after a Redis outage (pub/sub drops messages then) and every ``resync_s`` the feed sends a full snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from ..store.events import EventLog, progress_meta, transfer_ids
from ..store.keys import TERMINAL_STATES, Keys

log = logging.getLogger(__name__)

Message = dict[str, Any]


def row(transfer_id: str, status: dict[str, Any]) -> Message:
    """What the page shows of a transfer, from its status hash (EventLog.status). Only engine events carry
    session stats: after another (a CONTROL, say) ``stats`` is false and the page keeps the numbers it had;
    an ended transfer's numbers are its result's final stats."""
    result = status.get("result") if status.get("state") in TERMINAL_STATES else None
    session = (status.get("last") or {}).get("session") or (result or {}).get("stats") or None
    meta = progress_meta(session)
    owner = status.get("owner") or ""
    return {
        "id": transfer_id,
        "type": status.get("order_type", ""),
        "state": status.get("state", ""),
        "owner": owner,
        "host": owner.split(":", 1)[0],  # owner tokens are host:pid:attempt (store/lease.py)
        "client": status.get("client", ""),
        "attempt": status.get("attempt", 0),
        "created": float(status.get("created") or 0),
        "updated": float(status.get("updated") or 0),
        **meta,
        "stats": session is not None,
        "result": None if result is None else {k: result.get(k) for k in ("ok", "code", "error", "reason", "attempts")},
    }


def rate_points(events: list[dict[str, Any]]) -> list[tuple[float, float, int]]:
    """(time, rate kbps, bytes) of each event that carries session stats: a transfer's rate over time."""
    points = []
    for event in events:
        if "rate" in (event.get("session") or {}):
            meta = progress_meta(event["session"])
            points.append((float(event["time"]), float(meta["rate_kbps"]), int(meta["bytes"])))
    return points


class Feed:
    """Rows of the transfers under ``prefix``, and a thread that hands changed ones to ``deliver``."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        secret: bytes | None,
        deliver: Callable[[Message], None],
        interval: float = 0.5,
        resync_s: float = 10.0,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._secret = secret
        self._deliver = deliver
        self._interval = interval
        self._resync_s = resync_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)

    def row(self, transfer_id: str) -> Message | None:
        status = EventLog(self._redis, Keys(self._prefix, transfer_id), self._secret).status()
        return row(transfer_id, status) if status else None

    def snapshot(self) -> Message:
        rows = [r for r in map(self.row, transfer_ids(self._redis, self._prefix)) if r is not None]
        return {"type": "snapshot", "rows": rows}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        pause = 0.2
        while not self._stop.is_set():
            try:
                self._listen()
            except redis.RedisError as exc:  # unreachable, restarting, or refusing this user: logged, tried again
                log.warning("dashboard feed: %s: %s; retrying", type(exc).__name__, exc)
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)
            else:
                pause = 0.2

    def _listen(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pattern = Keys(self._prefix, "*").events
        head = len(Keys(self._prefix, "").events)
        try:
            pubsub.psubscribe(pattern)
            self._deliver(self.snapshot())  # after subscribing: whatever changes from here on is heard
            synced = flushed = time.monotonic()
            changed: set[str] = set()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=self._interval)
                if message and message.get("type") == "pmessage":
                    changed.add(message["channel"].decode(errors="replace")[head:])
                now = time.monotonic()
                if now - synced >= self._resync_s:  # ended transfers expire without an event
                    self._deliver(self.snapshot())
                    synced, changed = now, set()
                elif changed and now - flushed >= self._interval:
                    rows = [r for r in map(self.row, sorted(changed)) if r is not None]
                    self._deliver({"type": "rows", "rows": rows})
                    flushed, changed = now, set()
        finally:
            pubsub.close()


class Subscribers:
    """The SSE streams open now, each a bounded queue on the event loop; the feed thread delivers to all.
    A client too slow to keep ``maxsize`` messages queued is dropped (it reconnects and gets a snapshot)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int = 200) -> None:
        self._loop = loop
        self._maxsize = maxsize
        self._queues: set[asyncio.Queue[Message | None]] = set()

    def add(self) -> asyncio.Queue[Message | None]:
        queue: asyncio.Queue[Message | None] = asyncio.Queue(self._maxsize)
        self._queues.add(queue)
        return queue

    def remove(self, queue: asyncio.Queue[Message | None]) -> None:
        self._queues.discard(queue)

    def end_all(self) -> None:
        """Server shutdown: every stream ends."""
        for queue in self._queues:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)
        self._queues.clear()

    def deliver(self, message: Message) -> None:
        """From any thread."""
        self._loop.call_soon_threadsafe(self._fan_out, message)

    def _fan_out(self, message: Message) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self._queues.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)  # None: the stream ends
