"""Client API: enqueue a transfer, then watch and steer it from anywhere.

    from tasks.client import submit
    handle = submit(order)
    for event in handle.events(): ...
    handle.set_rate(50000); result = handle.wait()

Control calls append to the transfer's durable control stream, so they may
be made before a worker picked the transfer up; the owning worker applies
them in order. Submitting and steering need the shared key (FASPQ_SECRET_KEY):
the stored order is signed with it, together with FASPQ_CLIENT_NAME (who
submitted, for the audit trail), and every control message is authenticated.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import kombu.exceptions
import redis

from config.settings import RetryPolicy, Settings, get_settings, redacted
from faspmanager import BaseTransferOrder
from faspmanager.codes import ErrorCode

from .orders import ORDER_TYPES
from .schema import SCHEMA_VERSION, order_to_json, order_type, sign_record
from .secrets import Sealer
from .store import control as ctl
from .store.bounded import MAX_ORDER_BYTES, hash_has, stream_has
from .store.events import EventLog, UnknownTransfer, result_of
from .store.keys import TERMINAL_STATES, Keys
from .store.lease import Lease
from .store.redisconn import FAILOVER_RETRY_S, durable, permission_refused, redis_for, redis_user, text
from .store.result import Outcome, end_unsent, finish_transfer
from .transfer import TransferFailed, celery_app, send

CONTROL_VERDICTS = frozenset({"CONTROL", "CONTROL_REJECTED", "CONTROL_FAILED"})
"""The events by which the owning worker answers a control message (by its ``control_id``)."""


class NotEnqueued(RuntimeError):
    """The order was written but its task message could not be sent to the broker, so no worker will run it:
    the transfer ended FAILED ("not enqueued: ..."). ``denied`` when the broker's Redis user (``user``) was
    refused (its ACL does not let it push to ``queue``) rather than the broker being unreachable."""

    def __init__(self, transfer_id: str, queue: str, broker_url: str, cause: Exception) -> None:
        self.transfer_id, self.queue, self.cause = transfer_id, queue, cause
        self.broker = redacted(broker_url)
        self.user = redis_user(broker_url)
        self.denied = permission_refused(cause)
        super().__init__(f"transfer {transfer_id} not enqueued on queue {queue!r} at {self.broker}: {cause}")


def submit(
    order: BaseTransferOrder,
    transfer_id: str | None = None,
    queue: str | None = None,
    retry: dict[str, Any] | None = None,
) -> TransferHandle:
    """Enqueue ``order``; ``retry`` overrides keys of the global RetryPolicy for this transfer."""
    settings = get_settings()
    kind = order_type(order)
    transfer_id = transfer_id or uuid.uuid4().hex
    queue = queue or settings.queue
    policy = RetryPolicy.from_dict(retry, settings.retry)
    sealer = Sealer(settings.secret_key)  # SecretKeyError without a shared key: nothing is submitted
    body = json.dumps(order_to_json(order, sealer, transfer_id))
    if len(body) > MAX_ORDER_BYTES:  # workers do not read a bigger one (store/bounded.py)
        raise ValueError(f"order of {len(body)} bytes, over the limit of {MAX_ORDER_BYTES}")
    now = repr(time.time())
    record = sign_record(
        {
            "v": str(SCHEMA_VERSION),
            "type": kind,
            "task": ORDER_TYPES[kind].task,
            "queue": queue,
            "order": body,
            "retry": json.dumps(policy.to_dict()),
            "client": settings.client_name,
            "submitted": now,
        },
        transfer_id,
        settings.secret_key,
    )
    handle = TransferHandle(transfer_id, settings)
    client, keys = handle._redis, handle._keys
    # an ended transfer's order is gone but its status stays FASPQ_KEEP: checked first (a client ACL user
    # cannot delete what it wrote), the order's HSETNX then settles a race between two submits of one id. The
    # check is a bounded read, a script: with none loaded (ScriptsNotLoaded) nothing is written
    if hash_has(client, keys.status, "state") or not client.hsetnx(keys.order, "type", kind):
        raise ValueError(f"transfer id {transfer_id!r} is already in use")

    def enqueue() -> None:
        client.hset(keys.order, mapping=record)
        handle._log.publish(
            {"type": "QUEUED", "order_type": kind, "queue": queue, "client": settings.client_name},
            state="QUEUED",
            order_type=kind,
            queue=queue,
            created=now,
        )
        try:
            send(settings, kind, transfer_id, queue)
        except (kombu.exceptions.OperationalError, redis.RedisError) as exc:
            raise NotEnqueued(transfer_id, queue, settings.broker_url, exc) from exc

    try:
        enqueue()
        # a failover before a replica had the submission would forget it: enqueued again then (a second message is
        # harmless: the lease and the final state drop it). The state, written after the order, outlives the transfer.
        if not durable(client, keys.status, lambda: hash_has(client, keys.status, "state"), enqueue, FAILOVER_RETRY_S):
            raise redis.ConnectionError(f"transfer {transfer_id}: no Redis replica acknowledged the submission")
    except NotEnqueued as exc:  # nothing may stay QUEUED that no worker will ever receive
        end_unsent(client, handle._log, keys, f"not enqueued: {exc.cause}", settings.keep_s)
        raise
    return handle


class TransferHandle:
    """A submitted transfer, by id: follow its events, wait for its result, steer it (any process, any time)."""

    def __init__(self, transfer_id: str, settings: Settings | None = None) -> None:
        self.id = transfer_id
        self._settings = settings or get_settings()
        self._redis = redis_for(self._settings.events_url)
        self._keys = Keys(self._settings.prefix, transfer_id)
        self._log = EventLog(self._redis, self._keys, self._settings.secret_key)
        self._sender = ctl.Sender(self._settings.client_name)
        self._sending = threading.Lock()  # a sequence number reaches the stream in the order it was drawn
        self._marks: dict[str, str] = {}  # control id -> the last event before it was sent (see verdict)

    def __repr__(self) -> str:
        return f"TransferHandle({self.id!r})"

    def events(self, timeout: float | None = None, from_start: bool = False) -> Iterator[dict[str, Any]]:
        """Event dicts in order: a STATUS snapshot first, then each event up to the final RESULT."""
        return self._log.follow(timeout=timeout, from_start=from_start, forgotten_after=self._settings.lease_ttl_s)

    def status(self) -> dict[str, Any]:
        return self._log.status()

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """The final result dict: ok, reason, code, error, stats, failed_files, attempts."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in self._log.follow(timeout=timeout, forgotten_after=self._settings.lease_ttl_s):
            if event["type"] == "STATUS" and event.get("state") in TERMINAL_STATES:
                return event["result"]
            if event["type"] == "RESULT":
                return result_of(event)
            if deadline is not None and time.monotonic() > deadline:
                break
        raise TimeoutError(f"transfer {self.id} did not end within {timeout} s")

    # -- control ------------------------------------------------------------------------------

    def _send(self, op: str, data: bytes = b"", **args: Any) -> str:
        """Append a control message; ControlError (bad message, no key, transfer ended) or UnknownTransfer
        before anything is written."""
        with self._sending:  # two threads on one handle: a later number appended first would refuse the earlier
            fields = ctl.encode(
                self.id,
                ctl.Control(op, {k: v for k, v in args.items() if v is not None}, data),
                self._settings.secret_key,
                self._sender,
            )
            status = self._log.status()  # a state forged in the hash does not stop a message: only a verified end
            if not status:
                raise UnknownTransfer(self.id)
            if status.get("state") in TERMINAL_STATES:
                raise ctl.ControlError(f"transfer {self.id} already ended ({status['state']})")
            entry = [text(self._redis.xadd(self._keys.control, fields))]
            if op != "write":  # stream data gets no CONTROL event: not remembered, however many chunks go
                self._marks[entry[0]] = status.get("event_id", "0-0")

            def present() -> bool:
                ended = self._log.status().get("state") in TERMINAL_STATES
                return stream_has(self._redis, self._keys.control, entry[-1]) or ended

            def again() -> None:  # the same sender and sequence: the worker applies whichever copy comes first, once
                entry.append(text(self._redis.xadd(self._keys.control, fields)))

            durable(self._redis, self._keys.status, present, again, FAILOVER_RETRY_S)
            if len(entry) > 1 and op != "write":
                self._marks[entry[-1]] = self._marks[entry[0]]
            return entry[-1]

    def verdict(self, control_id: str, timeout: float) -> dict[str, Any] | None:
        """The worker's answer to control message ``control_id``: its ``CONTROL`` (applied), ``CONTROL_REJECTED``
        (refused: policy, cap, bad message) or ``CONTROL_FAILED`` (the session refused it) event, or the
        ``RESULT`` if the transfer ended first; None if none came within ``timeout`` s (no worker runs the
        transfer yet: the message waits in its stream for the one that will). Sending only appends, so this is
        how a client learns whether what it asked was done."""
        last = self._marks.get(control_id, "0-0")  # a message of another handle: the whole retained history
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            last, events = self._log.read(last, max(1, int(left * 1000)))
            for event in events:
                if event.get("type") == "RESULT" or (
                    event.get("control_id") == control_id and event.get("type") in CONTROL_VERDICTS
                ):
                    return event
        return None

    def set_rate(self, kbps: int) -> str:
        return self._send("set_rate", kbps=int(kbps))

    def cancel(self) -> str | None:
        """A transfer no worker runs ends here at once (CANCELLED, 28 USER_CANCEL, also in Celery's result
        backend): returns None. A running one is sent a cancel: returns the control message's id."""
        ctl.encode(self.id, ctl.Control("cancel"), self._settings.secret_key, self._sender)  # the key first
        lease = Lease(self._redis, self._keys, self._settings.lease_ttl_s, owner=f"cancel:{self._sender.id}")
        try:
            claimed = lease.claim_waiting()
        except redis.exceptions.NoPermissionError:  # a client ACL user without leases: the worker applies a cancel
            claimed = False
        if not claimed:
            return self._send("cancel")
        try:
            attempts = int(self._redis.hget(self._keys.counts, "attempt") or 0)
            result = finish_transfer(
                self._redis,
                self._log,
                self._keys,
                Outcome(False, int(ErrorCode.USER_CANCEL), "cancelled while waiting for a worker"),
                attempts,
                self._settings.keep_s,
            )
        finally:
            lease.release()
        celery_app(self._settings).backend.mark_as_failure(
            self.id, TransferFailed(result["code"], result["error"], result["reason"])
        )
        return None

    def add_source(
        self, source_path: str, dest_path: str, start_offset: int | None = None, end_offset: int | None = None
    ) -> str:
        return self._send(
            "add_source", source_path=source_path, dest_path=dest_path, start_offset=start_offset, end_offset=end_offset
        )

    def finish(self) -> str:
        """Persistent and stream transfers: no more sources; end once the queued ones are done."""
        return self._send("finish")

    def open_stream(self, dest_path: str) -> ClientStream:
        self._send("open_stream", dest_path=dest_path)
        return ClientStream(self)


class ClientStream:
    """Bytes for a stream upload, sent through Redis; ``write`` blocks while the worker lags
    more than FASPQ_STREAM_WINDOW bytes behind (backpressure)."""

    def __init__(self, handle: TransferHandle) -> None:
        self._handle = handle
        self._chunk = handle._settings.stream_chunk_bytes
        self._window = handle._settings.stream_window_bytes
        self.closed = False

    def write(self, data: bytes, timeout: float | None = None) -> None:
        if self.closed:
            raise ValueError("write to a closed stream")
        view = memoryview(data)
        for start in range(0, len(view), self._chunk):
            chunk = bytes(view[start : start + self._chunk])
            self._wait_for_room(len(chunk), timeout)
            self._handle._redis.incrby(self._handle._keys.pending, len(chunk))
            self._handle._send("write", data=chunk)

    def _wait_for_room(self, size: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        redis, keys = self._handle._redis, self._handle._keys
        pause = 0.002
        while int(redis.get(keys.pending) or 0) + size > max(self._window, size):
            if self._handle.status().get("state") in TERMINAL_STATES:
                raise BrokenPipeError(f"transfer {self._handle.id} ended")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("stream window stayed full")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._handle._send("close_stream")

    def __enter__(self) -> ClientStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
