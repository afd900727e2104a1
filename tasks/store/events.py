"""The event log of a transfer: every event, in order, plus its latest status.

An event is appended to the stream ``<prefix>:events:<id>``, published on the
pub/sub channel of the same name, and folded into the status hash in one Lua
call (none once the transfer ended), so a reader that takes the status snapshot and then reads the stream
after the snapshot's ``event_id`` misses nothing and sees nothing twice.

Clients' Redis users may write the stream and the status hash too (they publish QUEUED), so every event
carries an HMAC (a key derived from the shared secret, bound to the transfer id) and readers take only events
that verify: an event written by hand is skipped, and a transfer has ended only when the status's latest event
is a verified RESULT (its state and result are that event's, never the hash's own fields). Events of an older
version, without a MAC, are skipped the same way.
"""

from __future__ import annotations

import contextlib
import enum
import hmac
import json
import logging
import time
from collections.abc import Iterator
from typing import Any, cast

import redis

from ..secrets import derive, mac
from .bounded import MAX_EVENT_BYTES, READ_BUDGET, entry_bytes, hash_fields, hash_has, oversize, stream_range
from .keys import TERMINAL_STATES, Keys, final_state
from .redisconn import text
from .scripts import Script, ScriptsNotLoaded

STREAM_MAXLEN = 10000
STATUS_FIELDS = (
    "state", "event_id", "last", "last_mac", "updated", "order_type", "queue", "created", "owner", "client",
    "attempt", "result", "control_applied",
)  # fmt: skip
"""The status hash's fields that are read: any other a client's Redis user adds never leaves Redis."""
_JSON_FIELDS = ("last", "result", "attempt")
READ_POLL_S = 0.1
"""How often a reader waiting for events looks again (XREAD BLOCK would hand the next entry over whole)."""
log = logging.getLogger(__name__)


class UnknownTransfer(LookupError):
    """No transfer has this id (never submitted, or expired after FASPQ_KEEP seconds)."""


_PUBLISH = Script("""
local ended
if KEYS[3] then
  ended = redis.call('EXISTS', KEYS[3]) == 1
else
  local state = redis.call('HGET', KEYS[2], 'state')
  ended = state == 'SUCCEEDED' or state == 'FAILED' or state == 'CANCELLED'
end
if ended then
  return redis.call('HGET', KEYS[2], 'event_id')
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1], 'mac', ARGV[4])
redis.call('HSET', KEYS[2], 'event_id', id, 'last', ARGV[1], 'last_mac', ARGV[4], 'updated', ARGV[3])
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  if KEYS[3] and ARGV[i] == 'state' and (ARGV[i + 1] == 'SUCCEEDED' or ARGV[i + 1] == 'FAILED' or
      ARGV[i + 1] == 'CANCELLED') then
    redis.call('SET', KEYS[3], ARGV[i + 1], 'EX', ARGV[5])
  end
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return id
""")


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


def result_of(event: dict[str, Any]) -> dict[str, Any]:
    """The final result a RESULT event carries."""
    return {name: value for name, value in event.items() if name not in ("type", "transfer_id", "time")}


def transfer_ids(client: redis.Redis, prefix: str) -> list[str]:
    """Every transfer Redis knows (running, waiting, or ended and kept FASPQ_KEEP seconds), by id, sorted."""
    head = len(Keys(prefix, "").status)
    return sorted(text(key)[head:] for key in client.scan_iter(match=Keys(prefix, "*").status, count=500))


class EventLog:
    """The events of one transfer. ``secret`` is the shared key: publishing and reading need it (SecretKeyError
    without). ``keep_s`` makes a worker's log, whose Redis user may write the transfer's
    ``ended`` marker: it appends nothing once the marker exists and writes it, kept ``keep_s``, with the
    final state, in the same call. A client's log goes by the status hash's state instead, which a client's
    Redis user can write: a state forged there must not stop a worker's events."""

    def __init__(self, client: redis.Redis, keys: Keys, secret: bytes | None, keep_s: int | None = None) -> None:
        self._redis = client
        self._keys = keys
        self._secret = secret
        self._keep_s = keep_s

    def _mac(self, event: bytes) -> str:
        """The MAC of an event's JSON, bound to this transfer (SecretKeyError without a shared key)."""
        return mac(derive(self._secret, "faspq event mac"), self._keys.transfer_id.encode() + b"\0" + event)

    def _verified(self, raw: object, given: object) -> dict[str, Any] | None:
        """The event whose JSON is ``raw`` if ``given`` is its MAC, else None (logged)."""
        if isinstance(raw, bytes) and isinstance(given, bytes) and hmac.compare_digest(self._mac(raw).encode(), given):
            return cast(dict[str, Any], json.loads(raw))
        log.warning("transfer %s: an event without a valid MAC was skipped", self._keys.transfer_id)
        return None

    def publish(self, event: dict[str, Any], **status: object) -> str:
        """Append ``event`` (its ``type`` required) and set the given status fields atomically. Nothing is
        appended to a transfer that ended (the id of its last event is returned): its RESULT stays the last event
        and its state final, however often a writer retries the RESULT (the reply lost in a failover) and whatever
        a cut-off former owner, back on the network, still had to say."""
        event = {"transfer_id": self._keys.transfer_id, "time": time.time(), **event}
        body = to_json(event)
        args: list[str | int] = [body, STREAM_MAXLEN, repr(event["time"]), self._mac(body.encode()), self._keep_s or 0]
        for name, value in status.items():
            args += [name, value if isinstance(value, str) else to_json(value)]
        keys = [self._keys.events, self._keys.status] + ([self._keys.ended] if self._keep_s else [])
        return text(_PUBLISH(self._redis, keys, args))

    def status(self) -> dict[str, Any]:
        """The status hash decoded (missing transfer -> {}): JSON fields parsed (one that does not parse is left
        out), ``last`` only if it verifies. The state is terminal, with its ``result``, only when ``last`` is a
        verified RESULT, and then is that event's; a terminal state or a result without one is left out."""
        raw = hash_fields(self._redis, self._keys.status, STATUS_FIELDS, MAX_EVENT_BYTES)
        out: dict[str, Any] = {}
        for name, value in raw.items():
            if name in _JSON_FIELDS:
                with contextlib.suppress(ValueError):
                    out[name] = json.loads(value)
            elif name != "last_mac":
                out[name] = text(value, "replace")
        out.pop("result", None)
        last = self._verified(raw["last"], raw.get("last_mac")) if "last" in raw else None
        if last is None:
            out.pop("last", None)
        if last is not None and last.get("type") == "RESULT":
            out["result"] = result_of(last)
            out["state"] = final_state(out["result"])
        elif out.get("state") in TERMINAL_STATES:
            log.warning("transfer %s: a %s state without its RESULT was ignored", self._keys.transfer_id, out["state"])
            del out["state"]
        return out

    def _events(self, entries: list[tuple[str, dict[bytes, bytes]]]) -> Iterator[tuple[str, dict[str, Any]]]:
        """The entries' events that verify, with their ids."""
        for entry_id, fields in entries:
            size = oversize(fields)
            if size is not None:
                log.warning("transfer %s: an event entry of %d bytes was not read", self._keys.transfer_id, size)
                continue
            event = self._verified(fields.get(b"e"), fields.get(b"mac"))
            if event is not None:
                yield entry_id, event

    def history(self, count: int = 2000) -> list[dict[str, Any]]:
        """The events that verify of the latest ``count`` retained entries (fewer once those read hold about
        READ_BUDGET bytes), oldest first (the stream keeps STREAM_MAXLEN; an expired transfer has none). Read newest
        first, a read at a time: one stops after an oversize entry, and the entries before it are read on."""
        entries: list[tuple[str, dict[bytes, bytes]]] = []
        held, after = 0, None
        while len(entries) < count and held < READ_BUDGET:
            batch = stream_range(
                self._redis, self._keys.events, after, count - len(entries), MAX_EVENT_BYTES, reverse=True
            )
            if not batch:
                break
            entries += batch
            held += sum(entry_bytes(fields) for _, fields in batch)
            after = batch[-1][0]
        return [event for _, event in self._events(list(reversed(entries)))]

    def read(self, after: str, block_ms: int) -> tuple[str, list[dict[str, Any]]]:
        """The verified events after stream id ``after`` (up to 100 entries; waits up to ``block_ms`` for one),
        and the id to read on from: ``after`` when no entry came."""
        deadline = time.monotonic() + block_ms / 1000
        while not (entries := stream_range(self._redis, self._keys.events, after, 100, MAX_EVENT_BYTES)):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(READ_POLL_S, left))
        return (entries[-1][0] if entries else after), [event for _, event in self._events(entries)]

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
                after, events = self.read(last, block_ms)
                down_since = None
                if after == last:
                    missing_since = self._still_missing(missing_since, forgotten_after)
                last = after
            except (redis.ConnectionError, redis.TimeoutError, ScriptsNotLoaded):
                # Redis restarting: read on once it is back, and its scripts (a worker loads them again)
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > forgotten_after:  # not a restart: Redis is gone
                    raise
                time.sleep(0.2)
                events = []
            if not events:  # none, or only events that did not verify: they do not put the deadline off
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"no event for transfer {self._keys.transfer_id} in {timeout} s")
                continue
            for event in events:
                yield event
                if event.get("type") == "RESULT":
                    return
            if timeout is not None:
                deadline = time.monotonic() + timeout

    def _still_missing(self, since: float | None, limit: float) -> float | None:
        """Since when the status has been missing (None: it is there); UnknownTransfer past ``limit``."""
        if hash_has(self._redis, self._keys.status, "state"):  # a client's Redis user may make it huge
            return None
        now = time.monotonic()
        if since is not None and now - since > limit:
            raise UnknownTransfer(self._keys.transfer_id)
        return now if since is None else since
