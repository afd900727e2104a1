"""Redis key names of one transfer, under the configured prefix.

Every piece of a transfer's shared state lives under ``<prefix>:<kind>:<id>``
so an operator can find (and expire) all of it by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faspmanager.codes import ErrorCode


@dataclass(frozen=True)
class Keys:
    prefix: str
    transfer_id: str

    def _k(self, kind: str) -> str:
        return f"{self.prefix}:{kind}:{self.transfer_id}"

    @property
    def order(self) -> str:
        """Hash: task name, queue, sealed order JSON, retry policy."""
        return self._k("order")

    @property
    def status(self) -> str:
        """Hash: state, owner, attempt, latest event and its stream id, final result."""
        return self._k("status")

    @property
    def events(self) -> str:
        """Stream of every event (also the pub/sub channel of the same name)."""
        return self._k("events")

    @property
    def control(self) -> str:
        """Stream of control messages, durable until the transfer ends."""
        return self._k("control")

    @property
    def lease(self) -> str:
        """String: the owner token of the worker running the transfer, with a TTL."""
        return self._k("lease")

    @property
    def takeover(self) -> str:
        """String: claim of the worker re-enqueueing a dead owner's transfer."""
        return self._k("takeover")

    @property
    def ended(self) -> str:
        """String: the final state, written with the RESULT and kept FASPQ_KEEP, under a name a client ACL user
        cannot write (unlike the status hash): a worker never runs an ended transfer's order again."""
        return self._k("ended")

    @property
    def counts(self) -> str:
        """Hash: a worker's counts of the transfer (attempts, failures, whether stream data was consumed), under a
        name a client ACL user cannot write (unlike the status hash, which shows the attempt): no client resets
        the retry limit or a stream's one attempt."""
        return self._k("counts")

    @property
    def pending(self) -> str:
        """Integer: stream bytes written by the client and not yet passed to the engine."""
        return self._k("pending")


def watch_key(prefix: str) -> str:
    """Sorted set: transfer id -> time by which its owner must have shown life."""
    return f"{prefix}:watch"


def draining_key(prefix: str, node: str) -> str:
    """String, present while the Celery node ``node`` is in warm shutdown (seen by every pool process)."""
    return f"{prefix}:draining:{node}"


TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
"""How a transfer ends: CANCELLED is a failure with code 28 (USER_CANCEL), told apart as Celery users expect."""


def final_state(result: dict[str, Any]) -> str:
    """The terminal state of a final result (one of TERMINAL_STATES)."""
    return "SUCCEEDED" if result.get("ok") else "CANCELLED" if result.get("code") == ErrorCode.USER_CANCEL else "FAILED"
