"""Control messages: what a client asks of a running (or not yet running) transfer.

Messages go to the stream ``<prefix>:control:<id>`` and stay there until the
transfer ends, so one sent before pickup or during a retry reaches whichever
worker owns the transfer next; that worker replays them in order. Each message
is JSON (schema version, transfer id, sender, sequence, op, args) plus raw bytes
for stream data, always authenticated with an HMAC of a key derived from the
shared secret: a malformed, forged or misrouted message is rejected with a
reason, never applied. The sender id and its sequence are under the MAC, and a
worker takes each sender's messages in strictly increasing sequence
(:class:`Sequencer`): an entry copied back into the stream is refused.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any, cast

from redis.typing import EncodableT, FieldT

from ..orders import ORDER_TYPES
from ..secrets import SecretKeyError, derive, mac, mac_ok
from .bounded import oversize

CONTROL_VERSION = 2

# op -> (order types it applies to, required args and their types)
_ANY = frozenset(ORDER_TYPES)
_FILES_ADDED = frozenset(name for name, row in ORDER_TYPES.items() if row.open_ended and not row.stream)
_STREAM = frozenset(name for name, row in ORDER_TYPES.items() if row.stream)
OPS: dict[str, tuple[frozenset[str], dict[str, type]]] = {
    "set_rate": (_ANY, {"kbps": int}),
    "cancel": (_ANY, {}),
    "add_source": (_FILES_ADDED, {"source_path": str, "dest_path": str}),
    "finish": (_FILES_ADDED | _STREAM, {}),
    "open_stream": (_STREAM, {"dest_path": str}),
    "write": (_STREAM, {}),
    "close_stream": (_STREAM, {}),
}
_OPTIONAL_OFFSETS = ("start_offset", "end_offset")
MAX_KBPS = 10**9
"""The highest rate an order or ``set_rate`` may ask (1 Tbit/s, above any link): the engine's control protocol
carries signed 64-bit numbers, and a bigger one sent to the peer ends the whole session."""
MAX_OFFSET = 2**63 - 1
"""The highest file offset (a signed 64-bit ``off_t``), for the same reason."""


class ControlError(ValueError):
    """A control message that must not be applied (the reason says why)."""


@dataclass
class Control:
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    data: bytes = b""
    id: str = ""
    sender: str = ""
    seq: int = 0


class Sender:
    """One client's identity for control messages: a random id and its own increasing sequence."""

    def __init__(self, name: str = "") -> None:
        self.id = f"{name}/{os.urandom(8).hex()}" if name else os.urandom(8).hex()
        self._seq = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq


def _key(secret: bytes | None) -> bytes:
    try:
        return derive(secret, "faspq control mac")
    except SecretKeyError as exc:
        raise ControlError(f"control needs the shared key: {exc}") from None


def encode(transfer_id: str, control: Control, secret: bytes | None, sender: Sender) -> dict[FieldT, EncodableT]:
    """Stream fields of a message (validated first, so a client learns of a bad one at once)."""
    check(control)
    key = _key(secret)
    body = json.dumps(
        {
            "v": CONTROL_VERSION,
            "transfer_id": transfer_id,
            "sender": sender.id,
            "seq": sender.next(),
            "op": control.op,
            "args": control.args,
        },
        separators=(",", ":"),
    ).encode()
    return {"m": body, "d": control.data, "mac": mac(key, body + b"\0" + control.data).encode()}


def decode(
    entry_id: str, fields: dict[bytes, bytes], transfer_id: str, order_type: str, secret: bytes | None
) -> Control:
    """The message in a stream entry, or ControlError: too big to read, bad MAC, schema, op, args or transfer."""
    size = oversize(fields)
    if size is not None:
        raise ControlError(f"an entry of {size} bytes, over the limit, was not read")
    body, data = fields.get(b"m", b""), fields.get(b"d", b"")
    if not mac_ok(_key(secret), body + b"\0" + data, fields.get(b"mac", b"")):
        raise ControlError("bad or missing MAC (sender does not hold the shared key)")
    try:
        msg = json.loads(body)
    except ValueError as exc:
        raise ControlError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or msg.get("v") != CONTROL_VERSION:
        raise ControlError(f"unsupported control schema: {msg.get('v') if isinstance(msg, dict) else msg!r}")
    if msg.get("transfer_id") != transfer_id:
        raise ControlError(f"message for transfer {msg.get('transfer_id')!r} sent to {transfer_id!r}")
    sender, seq = msg.get("sender"), msg.get("seq")
    if not isinstance(sender, str) or not sender or not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ControlError("sender and sequence missing or malformed")
    control = Control(
        op=cast(str, msg.get("op")),
        args=cast(dict[str, Any], msg.get("args")),
        data=data,
        id=entry_id,
        sender=sender,
        seq=seq,
    )
    check(control)  # what the casts claim
    if order_type not in OPS[control.op][0]:
        raise ControlError(f"{control.op} does not apply to a {order_type}")
    return control


def check(control: Control) -> None:
    if not isinstance(control.op, str) or control.op not in OPS:
        raise ControlError(f"unknown op {control.op!r}")
    if not isinstance(control.args, dict):
        raise ControlError("args must be an object")
    required = OPS[control.op][1]
    allowed = set(required) | (set(_OPTIONAL_OFFSETS) if control.op == "add_source" else set())
    extra = set(control.args) - allowed
    if extra:
        raise ControlError(f"{control.op}: unknown args {sorted(extra)}")
    for name, kind in required.items():
        value = control.args.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
            raise ControlError(f"{control.op}: {name} must be a {'non-empty ' if kind is str else ''}{kind.__name__}")
    if control.op == "set_rate" and not 0 < control.args["kbps"] <= MAX_KBPS:
        raise ControlError(f"set_rate: kbps must be from 1 to {MAX_KBPS}")
    for name in _OPTIONAL_OFFSETS:
        value = control.args.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OFFSET
        ):
            raise ControlError(f"add_source: {name} must be an integer from 0 to {MAX_OFFSET}")
    start, end = control.args.get("start_offset"), control.args.get("end_offset")
    if start is not None and end is not None and end < start:  # faspmanager's rule: refused here, before sending
        raise ControlError(f"add_source: end_offset {end} is before start_offset {start}")
    if control.op != "write" and control.data:
        raise ControlError(f"{control.op} carries no data")


class Sequencer:
    """Per sender, the last sequence taken: a replayed, old or out-of-order message is refused."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def take(self, control: Control) -> None:
        last = self._last.get(control.sender, 0)
        if control.seq <= last:
            raise ControlError(
                f"replayed or out-of-order message: sequence {control.seq} of sender {control.sender!r} after {last}"
            )
        self._last[control.sender] = control.seq
