"""Versioned JSON form of faspmanager transfer orders.

Orders travel through the broker as data, never pickle. Every secret field is
sealed (tasks/secrets.py) for its transfer and field on the way in and opened
only on the worker; enum constants travel by class and member name;
HttpFallbackOptions as a nested object. ``order_from_json(order_to_json(o))``
rebuilds an equal order.

The stored order record (the Redis hash a worker reads) is signed as a whole
(``sign_record``): a worker runs nothing a holder of the shared key did not
write (``verify_record``). Version 1 records were unsigned and are refused.
"""

from __future__ import annotations

import enum
import json
import time
from typing import Any

import redis

import faspmanager as fm

from .orders import ORDER_TYPES
from .secrets import Sealer, SecretKeyError, derive, mac, mac_ok
from .store.bounded import MAX_ORDER_BYTES, hash_fields
from .store.control import MAX_KBPS
from .store.redisconn import text

SCHEMA_VERSION = 2
SIGNED_FIELDS = ("v", "type", "task", "queue", "order", "retry", "client", "submitted")
"""Every field of the stored order record but its MAC; the transfer id is signed with them."""
NOT_AUTHENTICATED = "order not authenticated"

SECRET_ORDER_FIELDS = frozenset({"dest_pass", "source_pass"})
SECRET_OPTIONS = frozenset({"content_protection_passphrase", "token", "cookie"})
HTTP_FALLBACK_FIELDS = (
    "encode_all_as_jpeg",
    "http_port",
    "https_key_filename",
    "https_cert_filename",
    "http_proxy_address_host",
    "http_proxy_address_port",
)


class OrderSchemaError(ValueError):
    """A JSON order that does not match this schema version."""


class OrderNotAuthenticated(ValueError):
    """A stored order without a valid MAC of the shared key: never run, never retried."""


def _signed_bytes(record: dict, transfer_id: str) -> bytes:
    return json.dumps(
        {"transfer_id": transfer_id, **{name: record.get(name) for name in SIGNED_FIELDS}},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def sign_record(record: dict, transfer_id: str, secret: bytes | None) -> dict:
    """``record`` (SIGNED_FIELDS, all str) with its ``mac``; SecretKeyError without a shared key."""
    return {**record, "mac": mac(derive(secret, "faspq order mac"), _signed_bytes(record, transfer_id))}


def stored_record(client: redis.Redis, key: str) -> dict[str, str]:
    """The order record in hash ``key``: its signed fields and MAC, each read only if at most MAX_ORDER_BYTES (a
    bigger one, or any other field, was written by a client's Redis user: never read, and the MAC then fails)."""
    fields = hash_fields(client, key, (*SIGNED_FIELDS, "mac"), MAX_ORDER_BYTES)
    return {name: text(value, "replace") for name, value in fields.items()}


def verify_record(record: dict, transfer_id: str, secret: bytes | None, max_age_s: float | None = None) -> dict:
    """The record if its MAC is the shared key's for this transfer id, else OrderNotAuthenticated
    (with how to resubmit when it is an unsigned order of the previous schema version). With ``max_age_s``
    a record submitted longer ago is refused too: a worker remembers that a transfer ended (``Keys.ended``)
    only that long, so an older signed record is a replay it could no longer tell apart."""
    if record.get("v") != str(SCHEMA_VERSION) or "mac" not in record:
        try:
            version = json.loads(record.get("order") or "{}").get("v")
        except (ValueError, AttributeError):
            version = None
        version = record.get("v") or version
        raise OrderNotAuthenticated(
            f"{NOT_AUTHENTICATED}: an order of schema version {version or 'unknown'} (this worker takes signed "
            f"version {SCHEMA_VERSION} orders only); resubmit it with a current client (faspq upload/download "
            f"or tasks.client.submit) configured with the deployment's FASPQ_SECRET_KEY"
        )
    try:
        key = derive(secret, "faspq order mac")
    except SecretKeyError as exc:
        raise OrderNotAuthenticated(f"{NOT_AUTHENTICATED}: {exc}") from None
    if not mac_ok(key, _signed_bytes(record, transfer_id), record["mac"]):
        raise OrderNotAuthenticated(
            f"{NOT_AUTHENTICATED}: bad MAC (not written by a holder of the shared key, "
            f"altered, or moved from another transfer id)"
        )
    if max_age_s is not None:
        try:
            age = time.time() - float(record.get("submitted") or "nan")
        except ValueError:
            age = float("nan")
        if not age <= max_age_s:
            raise OrderNotAuthenticated(
                f"order refused: submitted {age:.0f} s ago, longer than the {max_age_s:g} s (FASPQ_KEEP) a worker "
                f"remembers ended transfers; resubmit it"
            )
    return record


def order_type(order: fm.BaseTransferOrder) -> str:
    name = type(order).__name__
    if name not in ORDER_TYPES:
        raise OrderSchemaError(f"not a transfer order: {type(order).__name__}")
    return name


def order_to_json(order: fm.BaseTransferOrder, sealer: Sealer | None, transfer_id: str) -> dict[str, Any]:
    """The JSON-ready form of ``order``; ``sealer`` may be None only for orders without secrets, which are
    sealed for ``transfer_id`` and their field."""
    kind = order_type(order)
    fields = {}
    for name in ORDER_TYPES[kind].fields:
        value = getattr(order, name, None)
        if value is not None and name in SECRET_ORDER_FIELDS:
            value = {"$sealed": _sealer(sealer).seal(value, _context(transfer_id, "fields", name))}
        fields[name] = value
    options = getattr(order, "options", None)
    return {
        "v": SCHEMA_VERSION,
        "type": kind,
        "fields": fields,
        "options": None if options is None else options_to_json(options, sealer, transfer_id),
    }


def _context(transfer_id: str, part: str, name: str) -> str:
    """What a sealed value is bound to (AEAD associated data)."""
    return f"faspq order {transfer_id}\0{part}.{name}"


def order_from_json(data: dict[str, Any], sealer: Sealer | None, transfer_id: str) -> fm.BaseTransferOrder:
    if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
        version = data.get("v") if isinstance(data, dict) else data
        raise OrderSchemaError(f"unsupported order schema version: {version!r}")
    kind = data.get("type")
    if kind not in ORDER_TYPES:
        raise OrderSchemaError(f"unknown order type: {kind!r}")
    fields = dict(data.get("fields") or {})
    unknown = set(fields) - set(ORDER_TYPES[kind].fields)
    if unknown:
        raise OrderSchemaError(f"unknown {kind} fields: {sorted(unknown)}")
    for name in SECRET_ORDER_FIELDS & set(fields):
        if isinstance(fields[name], dict):
            fields[name] = _sealer(sealer).open(fields[name]["$sealed"], _context(transfer_id, "fields", name))
        elif fields[name] is not None:
            raise OrderSchemaError(f"{name} must be sealed, never in clear")
    options = data.get("options")
    kwargs = {k: v for k, v in fields.items() if v is not None}
    if options is not None:
        kwargs["options"] = options_from_json(options, sealer, transfer_id)
    return getattr(fm, kind)(**kwargs)


def _check_rates(options: fm.TransferOptions) -> None:
    """OrderSchemaError for a rate the engine cannot carry (control.MAX_KBPS): refused at submit, and by the
    worker before any engine starts."""
    for name in ("target_rate_kbps", "min_rate_kbps"):
        value = options.opts.get(name)
        if value is not None and not (isinstance(value, int) and 0 <= value <= MAX_KBPS):
            raise OrderSchemaError(f"{name} must be an integer from 0 to {MAX_KBPS}, got {value!r}")


def options_to_json(options: fm.TransferOptions, sealer: Sealer | None, transfer_id: str) -> dict[str, Any]:
    _check_rates(options)
    out = {}
    for name, value in options.opts.items():
        if value is not None and name in SECRET_OPTIONS:
            value = {"$sealed": _sealer(sealer).seal(value, _context(transfer_id, "options", name))}
        out[name] = _value_to_json(value)
    for name in fm.TransferOptions.defaults():
        if name not in options.opts:  # opted out of its default (partial_file_suffix=None): it stays out
            out[name] = None
    return out


def options_from_json(data: dict[str, Any], sealer: Sealer | None, transfer_id: str) -> fm.TransferOptions:
    kwargs: dict[str, object] = {}
    for name, value in data.items():
        if name in SECRET_OPTIONS and isinstance(value, dict) and "$sealed" in value:
            kwargs[name] = _sealer(sealer).open(value["$sealed"], _context(transfer_id, "options", name))
        elif name in SECRET_OPTIONS and value is not None:
            raise OrderSchemaError(f"option {name} must be sealed, never in clear")
        else:
            kwargs[name] = _value_from_json(value)
    options = fm.TransferOptions(**kwargs)
    _check_rates(options)
    return options


def _value_to_json(value: object) -> object:
    if isinstance(value, enum.Enum):
        return {"$enum": type(value).__name__, "name": value.name}
    if isinstance(value, fm.HttpFallbackOptions):
        return {"$http_fallback": {k: getattr(value, k, None) for k in HTTP_FALLBACK_FIELDS}}
    if isinstance(value, tuple):
        return list(value)
    return value


def _value_from_json(value: object) -> object:
    if isinstance(value, dict) and "$enum" in value:
        cls = getattr(fm, value["$enum"], None)
        if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
            raise OrderSchemaError(f"unknown enum {value['$enum']!r}")
        return cls[value["name"]]
    if isinstance(value, dict) and "$http_fallback" in value:
        return fm.HttpFallbackOptions(**{k: v for k, v in value["$http_fallback"].items() if v is not None})
    return value


def _sealer(sealer: Sealer | None) -> Sealer:
    if sealer is None:
        raise OrderSchemaError("this order carries a secret but no shared key is configured")
    return sealer
