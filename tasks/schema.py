"""Versioned JSON form of faspmanager transfer orders.

Orders travel through the broker as data, never pickle. Every secret field is
sealed (tasks/secrets.py) on the way in and opened only on the worker; enum
constants travel by class and member name; HttpFallbackOptions as a nested
object. ``order_from_json(order_to_json(o))`` rebuilds an equal order.
"""
from __future__ import annotations

import enum

import faspmanager as fm

from .secrets import Sealer

SCHEMA_VERSION = 1

# Constructor arguments of each order type, as documented in faspmanager-api.txt.
ORDER_FIELDS: dict[str, tuple[str, ...]] = {
    "FileUpload": ("source_paths", "dest_user", "dest_host", "dest_paths", "dest_pass", "dest_identity"),
    "FileDownload": ("source_paths", "source_user", "source_host", "dest_paths", "source_pass",
                     "source_identity"),
    "PersistentUpload": ("dest_user", "dest_host", "dest_pass", "dest_identity"),
    "PersistentDownload": ("source_user", "source_host", "source_pass", "source_identity"),
    "StreamUpload": ("dest_user", "dest_host", "dest_pass", "dest_identity"),
}
SECRET_ORDER_FIELDS = frozenset({"dest_pass", "source_pass"})
SECRET_OPTIONS = frozenset({"content_protection_passphrase", "token", "cookie"})
HTTP_FALLBACK_FIELDS = ("encode_all_as_jpeg", "http_port", "https_key_filename", "https_cert_filename",
                        "http_proxy_address_host", "http_proxy_address_port")


class OrderSchemaError(ValueError):
    """A JSON order that does not match this schema version."""


def order_type(order) -> str:
    name = type(order).__name__
    if name not in ORDER_FIELDS:
        raise OrderSchemaError(f"not a transfer order: {type(order).__name__}")
    return name


def order_to_json(order, sealer: Sealer | None) -> dict:
    """The JSON-ready form of ``order``; ``sealer`` may be None only for orders without secrets."""
    kind = order_type(order)
    fields = {}
    for name in ORDER_FIELDS[kind]:
        value = getattr(order, name, None)
        if value is not None and name in SECRET_ORDER_FIELDS:
            value = {"$sealed": _sealer(sealer).seal(value)}
        fields[name] = value
    options = getattr(order, "options", None)
    return {"v": SCHEMA_VERSION, "type": kind, "fields": fields,
            "options": None if options is None else options_to_json(options, sealer)}


def order_from_json(data: dict, sealer: Sealer | None):
    if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
        raise OrderSchemaError(f"unsupported order schema version: {data.get('v') if isinstance(data, dict) else data!r}")
    kind = data.get("type")
    if kind not in ORDER_FIELDS:
        raise OrderSchemaError(f"unknown order type: {kind!r}")
    fields = dict(data.get("fields") or {})
    unknown = set(fields) - set(ORDER_FIELDS[kind])
    if unknown:
        raise OrderSchemaError(f"unknown {kind} fields: {sorted(unknown)}")
    for name in SECRET_ORDER_FIELDS & set(fields):
        if isinstance(fields[name], dict):
            fields[name] = _sealer(sealer).open(fields[name]["$sealed"])
    options = data.get("options")
    kwargs = {k: v for k, v in fields.items() if v is not None}
    if options is not None:
        kwargs["options"] = options_from_json(options, sealer)
    return getattr(fm, kind)(**kwargs)


def options_to_json(options, sealer: Sealer | None) -> dict:
    out = {}
    for name, value in options.opts.items():
        if value is not None and name in SECRET_OPTIONS:
            value = {"$sealed": _sealer(sealer).seal(value)}
        out[name] = _value_to_json(value)
    return out


def options_from_json(data: dict, sealer: Sealer | None):
    kwargs = {}
    for name, value in data.items():
        if name in SECRET_OPTIONS and isinstance(value, dict) and "$sealed" in value:
            kwargs[name] = _sealer(sealer).open(value["$sealed"])
        else:
            kwargs[name] = _value_from_json(value)
    return fm.TransferOptions(**kwargs)


def _value_to_json(value):
    if isinstance(value, enum.Enum):
        return {"$enum": type(value).__name__, "name": value.name}
    if isinstance(value, fm.HttpFallbackOptions):
        return {"$http_fallback": {k: getattr(value, k, None) for k in HTTP_FALLBACK_FIELDS}}
    if isinstance(value, tuple):
        return list(value)
    return value


def _value_from_json(value):
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
