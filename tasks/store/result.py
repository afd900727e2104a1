"""How a transfer ends in Redis: its final RESULT event and status, then the cleanup.

Written by the worker whose attempt ended it, or by a client that cancelled
it while no worker ran it; either holds the transfer's lease meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from faspmanager.codes import ErrorCode, name_of

from .bounded import MAX_EVENT_BYTES
from .events import EventLog, to_json
from .keys import TERMINAL_STATES, Keys, final_state, watch_key
from .redisconn import FAILOVER_RETRY_S, durable


@dataclass
class Outcome:
    """How an attempt ended; ``code`` is the ascp error code of a failure. ``lease_lost`` and ``handover``
    mean that this attempt writes no result: another attempt goes on."""

    ok: bool
    code: int | None = None
    reason: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    failed_files: list[Any] = field(default_factory=list)
    lease_lost: bool = False
    handover: bool = False


def _final(outcome: Outcome, attempts: int) -> tuple[str, dict[str, Any]]:
    """The final state and result dict of ``outcome``. Its failed files are those that fit in a quarter of
    MAX_EVENT_BYTES (``failed_files_omitted`` counts the others): a bigger RESULT would be read by nobody."""
    failed, size = outcome.failed_files, 0
    for index, name in enumerate(failed):
        size += len(to_json(name)) + 1
        if size > MAX_EVENT_BYTES // 4:
            failed = failed[:index]
            break
    result = {
        "ok": outcome.ok,
        "reason": outcome.reason,
        "code": outcome.code,
        "error": None if outcome.code is None else name_of(outcome.code),
        "stats": outcome.stats,
        "failed_files": failed,
        "attempts": attempts,
    }
    if len(failed) < len(outcome.failed_files):
        result["failed_files_omitted"] = len(outcome.failed_files) - len(failed)
    return final_state(result), result


def finish_transfer(
    client: redis.Redis, events: EventLog, keys: Keys, outcome: Outcome, attempts: int, keep_s: int
) -> dict[str, Any]:
    """Publish the final RESULT, then drop what only a running transfer needs (the sealed order too)."""
    state, result = _final(outcome, attempts)

    def write() -> None:
        events.publish({"type": "RESULT", **result}, state=state, result=result)
        retire(client, keys, state, keep_s)

    def present() -> bool:
        return events.status().get("state") in TERMINAL_STATES

    # a result only the dead primary had would let the reaper run the transfer again: write it until a replica has it
    write()
    durable(client, keys.status, present, write, FAILOVER_RETRY_S)
    return result


def retire(client: redis.Redis, keys: Keys, state: str, keep_s: int) -> None:
    """Drop what only a running transfer needs (the sealed order too) and keep its status, events and end
    (``ended``) ``keep_s`` seconds; all or nothing (NoPermissionError for a client ACL user)."""
    pipe = client.pipeline()
    pipe.zrem(watch_key(keys.prefix), keys.transfer_id)
    pipe.delete(keys.order, keys.control, keys.pending, keys.takeover, keys.counts)
    pipe.set(keys.ended, state, ex=keep_s)
    pipe.expire(keys.status, keep_s)
    pipe.expire(keys.events, keep_s)
    pipe.execute()


def end_unsent(client: redis.Redis, events: EventLog, keys: Keys, reason: str, keep_s: int) -> None:
    """End a submission whose task message never reached the broker: FAILED at once (no worker would ever pick
    it up, so it must not stay QUEUED; a late delivery finds it ended) and retired like any ended transfer. The
    sealed order is blanked first, so no secret stays behind; a Redis user that may not delete or expire (the
    README's client ACL user) leaves the retiring to the workers (workers/reaper.py: an ended transfer without
    a TTL)."""
    state, result = _final(Outcome(False, int(ErrorCode.TRANSFER_ERROR), reason), 0)
    # blanked before the RESULT: once the transfer shows ended a worker may retire it, and a write after that
    # would bring the order back for ever
    client.hset(keys.order, mapping={"order": "", "mac": ""})
    events.publish({"type": "RESULT", **result}, state=state, result=result)
    try:
        retire(client, keys, state, keep_s)
    except redis.exceptions.NoPermissionError:
        pass  # the workers retire it
