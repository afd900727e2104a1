"""The event log of a transfer: every event, in order, plus its latest status.

An event is appended to the stream ``<prefix>:events:<id>``, published on the
pub/sub channel of the same name, and folded into the status hash in one Lua
call (none once the transfer ended), so a reader that takes the status snapshot and then reads the stream
after the snapshot's ``event_id`` misses nothing and sees nothing twice.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterator
from typing import Any

import redis

from .keys import TERMINAL_STATES, Keys
from .redisconn import read_entries, stream_entries, text

STREAM_MAXLEN = 10000


class UnknownTransfer(LookupError):
    """No transfer has this id (never submitted, or expired after FASPQ_KEEP seconds)."""


_PUBLISH = """
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED' then
  return redis.call('HGET', KEYS[2], 'event_id')
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
redis.call('HSET', KEYS[2], 'event_id', id, 'last', ARGV[1], 'updated', ARGV[3])
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return id
"""


def progress_meta(session: dict[str, Any] | None) -> dict[str, Any]:
    """Where a running session stands, from its stats (the engine's, on every event): bytes moved in this
    attempt, the job's total when the engine announced it (pre_transfer_bytes, else None), the current
    rate and the ETA it gives. Celery's PROGRESS state, ``faspq watch`` and ``ls`` all read this."""
    session = session or {}
    done = int(session.get("transfer_bytes") or 0)
    total = session.get("pre_transfer_bytes") or None
    rate_kbps = session.get("rate") or 0
    rate_bps = rate_kbps * 1000 / 8 if isinstance(rate_kbps, (int, float)) else 0
    eta = (max(total - done, 0) / rate_bps) if total and rate_bps > 0 else None
    return {"bytes": done, "total": total, "rate_kbps": rate_kbps or 0, "eta_s": None if eta is None else round(eta, 1)}


def status_session(status: dict[str, Any]) -> dict[str, Any] | None:
    """The session stats a status snapshot stands at: its latest event's, or, once the transfer ended (its last
    event the RESULT, which carries none), the result's final stats."""
    last = status.get("last") or {}
    return last.get("session") or (status.get("result") or {}).get("stats")


def progress_line(meta: dict[str, Any]) -> str:
    """PROGRESS in words: faspq's piped lines, and the ``result`` of task-progress events (the one field of
    a running task that Flower's task list and API show)."""
    total = meta.get("total")
    eta = meta.get("eta_s")
    return (
        f"{meta['bytes']}/{total if total else '?'} bytes, {meta.get('rate_kbps') or 0} kbps, "
        f"eta {'?' if eta is None else f'{eta:.0f} s'}"
    )


def to_json(value: object) -> str:
    """JSON of event payloads: enums by name, anything else unknown as text."""
    return json.dumps(value, default=_jsonable, separators=(",", ":"))


def _jsonable(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def transfer_ids(client: redis.Redis, prefix: str) -> list[str]:
    """Every transfer Redis knows (running, waiting, or ended and kept FASPQ_KEEP seconds), by id, sorted."""
    head = len(Keys(prefix, "").status)
    return sorted(text(key)[head:] for key in client.scan_iter(match=Keys(prefix, "*").status, count=500))


class EventLog:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys
        self._publish = client.register_script(_PUBLISH)

    def publish(self, event: dict[str, Any], **status: object) -> str:
        """Append ``event`` (its ``type`` required) and set the given status fields atomically. Nothing is
        appended to a transfer that ended (the id of its last event is returned): its RESULT stays the last event
        and its state final, however often a writer retries the RESULT (the reply lost in a failover) and whatever
        a cut-off former owner, back on the network, still had to say."""
        event = {"transfer_id": self._keys.transfer_id, "time": time.time(), **event}
        args: list[str | int] = [to_json(event), STREAM_MAXLEN, repr(event["time"])]
        for name, value in status.items():
            args += [name, value if isinstance(value, str) else to_json(value)]
        event_id = self._publish(keys=[self._keys.events, self._keys.status], args=args)
        return text(event_id)

    def status(self) -> dict[str, Any]:
        """The status hash decoded: JSON fields parsed, missing transfer -> {}."""
        out: dict[str, Any] = {}
        for raw_name, raw_value in self._redis.hgetall(self._keys.status).items():
            name, value = text(raw_name), text(raw_value)
            out[name] = json.loads(value) if name in ("last", "result", "attempt", "retry") else value
        return out

    def history(self, count: int = 2000) -> list[dict[str, Any]]:
        """The latest ``count`` retained events, oldest first (the stream keeps STREAM_MAXLEN; an expired
        transfer has none)."""
        entries = stream_entries(self._redis.xrevrange(self._keys.events, count=count))
        return [json.loads(fields[b"e"]) for _, fields in reversed(entries)]

    def follow(
        self, timeout: float | None = None, from_start: bool = False, forgotten_after: float = 60.0
    ) -> Iterator[dict[str, Any]]:
        """Events in order: first a STATUS snapshot (where the transfer stands now), then every
        later event, ending after the final RESULT. ``timeout`` bounds the wait for each next event
        (TimeoutError); ``from_start`` replays the whole retained history instead of the snapshot.
        A Redis restart is ridden out (the stream is read on from where it was; a Redis unreachable longer than
        ``forgotten_after`` raises its ConnectionError); a Redis that came back
        without this transfer (no persistence) raises UnknownTransfer once its status stayed missing
        ``forgotten_after`` seconds (the worker that ran it publishes its RESULT well before: the lease's time)."""
        status = self.status()
        if not status:
            raise UnknownTransfer(self._keys.transfer_id)
        if from_start:
            last = "0-0"
        else:
            yield {"type": "STATUS", "transfer_id": self._keys.transfer_id, **status}
            if status.get("state") in TERMINAL_STATES:
                return
            last = status.get("event_id", "0-0")
        block_ms = 1000
        deadline = None if timeout is None else time.monotonic() + timeout
        missing_since: float | None = None
        down_since: float | None = None
        while True:
            try:
                reply = self._redis.xread({self._keys.events: last}, count=100, block=block_ms)
                down_since = None
                if not reply:
                    missing_since = self._still_missing(missing_since, forgotten_after)
            except (redis.ConnectionError, redis.TimeoutError):  # Redis restarting: read on once it is back
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > forgotten_after:  # not a restart: Redis is gone
                    raise
                time.sleep(0.2)
                reply = None
            if not reply:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"no event for transfer {self._keys.transfer_id} in {timeout} s")
                continue
            for entry_id, fields in read_entries(reply):
                last = entry_id
                event = json.loads(fields[b"e"])
                yield event
                if event.get("type") == "RESULT":
                    return
            if timeout is not None:
                deadline = time.monotonic() + timeout

    def _still_missing(self, since: float | None, limit: float) -> float | None:
        """Since when the status has been missing (None: it is there); UnknownTransfer past ``limit``."""
        if self._redis.hget(self._keys.status, "state") is not None:  # HGET: the README's client ACL has no EXISTS
            return None
        now = time.monotonic()
        if since is not None and now - since > limit:
            raise UnknownTransfer(self._keys.transfer_id)
        return now if since is None else since
