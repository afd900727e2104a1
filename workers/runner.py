"""One attempt of a transfer on this worker: a faspmanager session bridged to Redis.

The session's listener events go to the transfer's event log; control messages
are replayed from the start of the transfer's control stream (so those sent
before pickup, or applied by a previous attempt, reach this session too) and
applied in order by a pump thread (each sender's sequence strictly increasing:
a replayed entry is refused and reported, never applied; add_source and
set_rate are held to the worker's policy); the lease heartbeat runs alongside. A retry
or takeover re-runs the same order with ``resume_check`` set, so the engine
continues partial files instead of starting over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import redis

import faspmanager as fm
from config.policy import PolicyError
from config.settings import Settings
from faspmanager.codes import EngineError, ErrorCode
from tasks.orders import ORDER_TYPES
from tasks.schema import SECRET_OPTIONS
from tasks.store import control as ctl
from tasks.store.bounded import CONTROL_OVERHEAD, stream_range
from tasks.store.events import EventLog, progress_meta
from tasks.store.keys import Keys, draining_key
from tasks.store.lease import Lease
from tasks.store.result import Outcome

from .heartbeat import Heartbeat

log = logging.getLogger(__name__)

DRAIN_CHECK_S = 1.0
CONTROL_POLL_S = 0.1
"""How often the pump looks for control entries when none came: XREAD BLOCK, which would wait instead, hands the
next entry over whole, before its size can be checked (tasks/store/bounded.py)."""
CONTROL_BATCH = 64


def _name(value: object) -> str:
    return getattr(value, "name", None) or str(value)


def _code_in(*dicts: dict[str, Any] | None) -> int | None:
    """The first ascp error code (faspmanager's ``code`` stat) found in the given stats dicts."""
    for data in dicts:
        value = (data or {}).get("code")
        if isinstance(value, int) and value:
            return value
    return None


class Attempt:
    """One attempt of one transfer; ``run()`` once."""

    session: fm.Session
    """The engine's session, from the start of ``run()`` on (every other method runs after)."""

    def __init__(
        self,
        *,
        order: fm.BaseTransferOrder,
        kind: str,
        keys: Keys,
        client: redis.Redis,
        events: EventLog,
        lease: Lease,
        settings: Settings,
        attempt: int,
        node: str = "",
        queue: str = "",
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.order = order
        self.kind = kind
        self.order_type = ORDER_TYPES[kind]
        self.queue = queue or settings.queue
        self.keys = keys
        self.redis = client
        self.events = events
        self.lease = lease
        self.settings = settings
        self.attempt = attempt
        self.progress = progress  # called with progress_meta() on each STATS (throttled by the callee)
        self.draining_key = draining_key(keys.prefix, node or "?")
        self._drain_checked = 0.0
        self.stream: fm.Stream | None = None
        self.finish_requested = threading.Event()
        self.cancelled = False
        self.lease_lost = False
        self.handover = False
        self.last_error: dict[str, Any] | None = None
        self._stop_pump = threading.Event()
        self._control_lock = threading.Lock()  # held while a control message is handled, and to stop the pump

    # -- the attempt ---------------------------------------------------------------------------

    def run(self) -> Outcome:
        if self.attempt > 1:
            self._resume_partial_files()
            if self.order_type.stream and self.redis.hget(self.keys.counts, "stream_consumed"):
                return Outcome(
                    False,
                    int(ErrorCode.ASCP),
                    "stream data was consumed by an earlier attempt; a stream upload cannot resume on another attempt",
                )
        if self._cancel_already_sent():
            self.cancelled = True
            return Outcome(False, int(ErrorCode.USER_CANCEL), "cancelled before the session started")
        try:
            self.session = fm.session(order=self.order, ascp_path=self.settings.ascp_path, listener=self._on_event)
            self.session.extended_events = True  # the event log keeps START (a file's bar) and NOTIFICATION (totals)
        except Exception as exc:  # the order itself is unusable: never retryable
            return Outcome(False, int(ErrorCode.USAGE), f"{type(exc).__name__}: {exc}")
        pump = threading.Thread(target=self._pump, name=f"control-{self.keys.transfer_id}", daemon=True)
        try:
            with Heartbeat(self.lease, self.settings.heartbeat_s, self._on_lease_lost):  # start may take a while
                try:
                    self.session.start()
                except EngineError as exc:
                    return Outcome(False, exc.code, exc.description)
                except FileNotFoundError as exc:
                    return Outcome(False, int(ErrorCode.ASCP), f"transfer program not found: {exc}")
                except fm.SessionStartError as exc:
                    return self._from_session(f"session start failed: {exc}")
                if self.lease_lost:
                    return Outcome(False, None, "lease lost to another worker", lease_lost=True)
                pump.start()
                try:
                    if self.order_type.open_ended:
                        self._wait_for_finish_request()
                    result = None if self.handover else self.session.finish()
                finally:
                    # no control message is handled once this returns; the pump's pending read or pause (up to
                    # CONTROL_POLL_S) ends on its own, nobody waits for it: joining it held every result back that long
                    with self._control_lock:
                        self._stop_pump.set()
            if self.handover or result is None:  # close() below ends the engine; the next owner resumes
                return Outcome(False, None, "handed over at worker shutdown", handover=True)
            return self._outcome(result)
        finally:
            self.session.close()

    def _resume_partial_files(self) -> None:
        if self.order.options.resume_check in (None, fm.ResumeCheck.OFF):
            self.order.options.resume_check = fm.ResumeCheck.SPARSE_CHECKSUM

    def _cancel_already_sent(self) -> bool:
        sequencer = ctl.Sequencer()
        after: str | None = None
        while entries := self._control_entries(after):
            for entry_id, fields in entries:
                try:
                    message = ctl.decode(entry_id, fields, self.keys.transfer_id, self.kind, self.settings.secret_key)
                    sequencer.take(message)
                except ctl.ControlError:
                    continue  # the pump reports it
                if message.op == "cancel":
                    return True
            after = entries[-1][0]
        return False

    def _control_entries(self, after: str | None) -> list[tuple[str, dict[bytes, bytes]]]:
        """The next control entries after ``after`` (from the start: None), one bigger than a stream chunk and
        its message never read whole (it is rejected as such)."""
        limit = self.settings.stream_chunk_bytes + CONTROL_OVERHEAD
        return stream_range(self.redis, self.keys.control, after, CONTROL_BATCH, limit)

    def _may_hand_over(self) -> bool:
        """Stream data already passed to the engine cannot be replayed: stream uploads always finish."""
        policy = self.settings.shutdown_handover
        if self.order_type.stream:
            return False
        return policy == "all" or (policy == "persistent" and self.order_type.open_ended)

    def _check_shutdown(self) -> None:
        """Hand over when this attempt's Celery node began a warm shutdown (workers/app.py marks it in
        Redis, so pool processes of any kind see it), instead of holding the shutdown up."""
        now = time.monotonic()
        if self.handover or now - self._drain_checked < DRAIN_CHECK_S or not self._may_hand_over():
            return
        self._drain_checked = now
        if self.redis.exists(self.draining_key):
            log.warning("worker shutting down: handing transfer %s over", self.keys.transfer_id)
            self.handover = True
            self.finish_requested.set()
            if not self.order_type.open_ended:
                self.session.cancel()

    def _wait_for_finish_request(self) -> None:
        while not self.finish_requested.wait(0.2):
            if _name(self.session.state()) in ("FINISHED", "FAILED"):
                return

    def _from_session(self, reason: str) -> Outcome:
        code = _code_in(self.last_error)
        return Outcome(False, code if code is not None else int(ErrorCode.TRANSFER_ERROR), reason)

    def _outcome(self, result: fm.SessionResult) -> Outcome:
        stats = _without_secrets(result.stats()) or {}
        failed = list(result.failed_files() or [])
        if self.lease_lost:
            return Outcome(False, None, "lease lost to another worker", stats, failed, lease_lost=True)
        if result.ok():
            return Outcome(True, None, "", stats, failed)
        code = _code_in(self.last_error, stats)
        if self.cancelled:
            code = int(ErrorCode.USER_CANCEL)
        if code is None:
            code = int(ErrorCode.TRANSFER_ERROR)
        return Outcome(False, code, result.reason() or f"transfer failed ({code})", stats, failed)

    # -- events --------------------------------------------------------------------------------

    def _on_event(self, event: fm.TransferEvent) -> None:
        """Listener: runs on the session's thread; never let Redis trouble reach the session."""
        record = {
            "type": _name(event.event_type),
            "attempt": self.attempt,
            "worker": self.lease.owner,
            "session": _without_secrets(event.session_stats),
            "file": _without_secrets(event.file_stats),
        }
        if record["type"] == "ERROR":
            self.last_error = {**(event.session_stats or {}), **(event.file_stats or {})}
        elif record["type"] in ("STATS", "NOTIFICATION", "STOP") and self.progress is not None:
            self.progress(progress_meta(event.session_stats))
        try:
            self.events.publish(record, state="RUNNING")
        except redis.RedisError as exc:
            log.warning("event of %s not published: %s", self.keys.transfer_id, exc)

    def _on_lease_lost(self) -> None:
        self.lease_lost = True
        self.finish_requested.set()
        try:
            self.session.cancel()
        except Exception as exc:  # the session may already be over
            log.info("cancel after lease loss: %s", exc)

    # -- control -------------------------------------------------------------------------------

    def _pump(self) -> None:
        self._sequencer = ctl.Sequencer()
        last: str | None = None
        while True:
            try:
                with self._control_lock:
                    if self._stop_pump.is_set():
                        return
                    self._check_shutdown()
                entries = self._control_entries(last)
            except redis.RedisError as exc:
                log.warning("control read for %s failed (will retry): %s", self.keys.transfer_id, exc)
                self._stop_pump.wait(1.0)
                continue
            if not entries:
                self._stop_pump.wait(CONTROL_POLL_S)
            for entry_id, fields in entries:
                last = entry_id
                with self._control_lock:
                    if self._stop_pump.is_set():  # the session ended: what came too late is not handled
                        return
                    try:
                        self._handle(last, fields)
                    except redis.RedisError as exc:  # applied, but not recorded as such
                        log.warning("control %s of %s: %s", last, self.keys.transfer_id, exc)

    def _handle(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            message = ctl.decode(entry_id, fields, self.keys.transfer_id, self.kind, self.settings.secret_key)
            self._sequencer.take(message)
            self._check_policy(message)
        except (ctl.ControlError, PolicyError) as exc:
            log.warning("control message %s of %s rejected: %s", entry_id, self.keys.transfer_id, exc)
            self._publish({"type": "CONTROL_REJECTED", "control_id": entry_id, "reason": str(exc)})
            return
        if self.lease.holder() != self.lease.owner:  # the new owner replays it; fencing is the heartbeat's job
            log.warning(
                "control %s of %s not applied: this worker no longer owns the transfer", entry_id, self.keys.transfer_id
            )
            return
        try:
            self._apply(message)
        except Exception as exc:  # a command the session refuses must not end the pump
            log.warning("control %s %s of %s failed: %s", message.op, entry_id, self.keys.transfer_id, exc)
            self._publish(
                {
                    "type": "CONTROL_FAILED",
                    "control_id": entry_id,
                    "op": message.op,
                    "reason": f"{type(exc).__name__}: {exc}",
                }
            )
            return
        if message.op == "write":
            self.redis.hset(self.keys.status, "control_applied", entry_id)
        else:
            self._publish(
                {
                    "type": "CONTROL",
                    "control_id": entry_id,
                    "op": message.op,
                    "args": message.args,
                    "sender": message.sender,
                    "seq": message.seq,
                },
                control_applied=entry_id,
            )

    def _check_policy(self, message: ctl.Control) -> None:
        policy = self.settings.policy
        if message.op == "set_rate":
            policy.check_rate(self.queue, message.args["kbps"], "set_rate kbps")
        elif message.op == "add_source":
            policy.check_add_source(
                self.kind, self.order.options, message.args["source_path"], message.args["dest_path"]
            )

    def _apply(self, message: ctl.Control) -> None:
        op, args, session = message.op, message.args, self.session
        if op == "set_rate":
            session.set_rate(args["kbps"])
        elif op == "cancel":
            self.cancelled = True
            self.finish_requested.set()
            session.cancel()
        elif op == "add_source":
            cast(fm.PersistentSession, session).add_source(
                args["source_path"], args["dest_path"], args.get("start_offset"), args.get("end_offset")
            )
        elif op == "open_stream":
            self._close_stream()
            self.stream = cast(fm.StreamSession, session).open_stream(args["dest_path"])
        elif op == "write":
            if self.stream is None:
                raise fm.StreamStateError("write before open_stream")
            self.redis.hset(self.keys.counts, "stream_consumed", 1)
            self.stream.send(message.data)
            pipe = self.redis.pipeline()
            pipe.decrby(self.keys.pending, len(message.data))
            pipe.xdel(self.keys.control, message.id)
            pipe.execute()
        elif op == "close_stream":
            self._close_stream()
        elif op == "finish":
            self._close_stream()
            self.finish_requested.set()

    def _close_stream(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            stream.close()

    def _publish(self, event: dict[str, Any], **status: object) -> None:
        try:
            self.events.publish({"attempt": self.attempt, "worker": self.lease.owner, **event}, **status)
        except redis.RedisError as exc:
            log.warning("event of %s not published: %s", self.keys.transfer_id, exc)


def _without_secrets(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """Engine stats as published (events, status, result, Celery's backend and log): the engine echoes the
    session's cookie, a secret the order keeps sealed, so secret option names are left out."""
    return None if stats is None else {name: value for name, value in stats.items() if name not in SECRET_OPTIONS}
