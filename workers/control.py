"""Control messages: what a client asks of a running (or not yet running) transfer.

Messages go to the stream ``<prefix>:control:<id>`` and stay there until the
transfer ends, so one sent before pickup or during a retry reaches whichever
worker owns the transfer next; that worker replays them in order. Each message
is JSON (schema version, transfer id, op, args) plus raw bytes for stream data,
authenticated with an HMAC keyed from the shared secret: a malformed, forged or
misrouted message is rejected with a reason, never applied.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

CONTROL_VERSION = 1

# op -> (order types it applies to, required args and their types)
_ANY = frozenset({"FileUpload", "FileDownload", "PersistentUpload", "PersistentDownload", "StreamUpload"})
_PERSISTENT = frozenset({"PersistentUpload", "PersistentDownload"})
_STREAM = frozenset({"StreamUpload"})
OPS: dict[str, tuple[frozenset, dict]] = {
    "set_rate": (_ANY, {"kbps": int}),
    "cancel": (_ANY, {}),
    "add_source": (_PERSISTENT, {"source_path": str, "dest_path": str}),
    "finish": (_PERSISTENT | _STREAM, {}),
    "open_stream": (_STREAM, {"dest_path": str}),
    "write": (_STREAM, {}),
    "close_stream": (_STREAM, {}),
}
_OPTIONAL_OFFSETS = ("start_offset", "end_offset")


class ControlError(ValueError):
    """A control message that must not be applied (the reason says why)."""


@dataclass
class Control:
    op: str
    args: dict = field(default_factory=dict)
    data: bytes = b""
    id: str = ""


def _mac_key(secret: bytes | None) -> bytes | None:
    return None if not secret else hashlib.sha256(b"faspq-control\0" + secret).digest()


def encode(transfer_id: str, control: Control, secret: bytes | None) -> dict[str, bytes]:
    """Stream fields of a message (validated first, so a client learns of a bad one at once)."""
    check(control)
    body = json.dumps({"v": CONTROL_VERSION, "transfer_id": transfer_id, "op": control.op,
                       "args": control.args}, separators=(",", ":")).encode()
    fields = {"m": body, "d": control.data}
    key = _mac_key(secret)
    if key:
        fields["mac"] = hmac.new(key, body + b"\0" + control.data, hashlib.sha256).hexdigest().encode()
    return fields


def decode(entry_id: str, fields: dict, transfer_id: str, order_type: str, secret: bytes | None) -> Control:
    """The message in a stream entry, or ControlError: bad MAC, schema, op, args or transfer."""
    body, data = fields.get(b"m", b""), fields.get(b"d", b"")
    key = _mac_key(secret)
    if key:
        want = hmac.new(key, body + b"\0" + data, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(want, fields.get(b"mac", b"")):
            raise ControlError("bad or missing MAC (sender does not hold the shared key)")
    try:
        msg = json.loads(body)
    except ValueError as exc:
        raise ControlError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or msg.get("v") != CONTROL_VERSION:
        raise ControlError(f"unsupported control schema: {msg.get('v') if isinstance(msg, dict) else msg!r}")
    if msg.get("transfer_id") != transfer_id:
        raise ControlError(f"message for transfer {msg.get('transfer_id')!r} sent to {transfer_id!r}")
    control = Control(op=msg.get("op"), args=msg.get("args"), data=data, id=entry_id)
    check(control)
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
    if control.op == "set_rate" and control.args["kbps"] <= 0:
        raise ControlError("set_rate: kbps must be positive")
    for name in _OPTIONAL_OFFSETS:
        value = control.args.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ControlError(f"add_source: {name} must be a non-negative integer")
    if control.op != "write" and control.data:
        raise ControlError(f"{control.op} carries no data")
