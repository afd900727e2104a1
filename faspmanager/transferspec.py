"""IBM transfer specs (the JSON IBM's Node API and aspera-cli hand around) as TransferOptions, and back.

Field names and meanings are those of aspera-cli's ``lib/aspera/transfer/spec.schema.yaml``. The fields
that say who and what (``remote_host``, ``remote_user``, ``remote_password``, ``ssh_private_key*``,
``direction``, ``paths``) belong to the order, not to its options: :func:`order_fields` returns them for
the caller to build a FileUpload/FileDownload. Fields that only inform a server or another agent are
listed in :data:`INFORMATIONAL` and skipped; any other field is a ValueError, never silently dropped.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .options import HttpFallbackOptions, TransferOptions

# ts field -> TransferOptions name, for values that need no conversion beyond the enums' own spellings
SAME = {
    "apply_local_docroot": "apply_local_docroot",
    "cookie": "cookie",
    "create_dir": "create_dirs",
    "delete_before_transfer": "delete_before_transfer",
    "destination_root": "destination_root",
    "fasp_port": "udp_port",
    "file_checksum": "file_checksum",
    "min_rate_kbps": "min_rate_kbps",
    "move_after_transfer": "move_after_transfer_path",
    "multi_session_threshold": "multi_session_threshold",
    "overwrite": "overwrite_policy",
    "precalculate_job_size": "precalculate_job_size",
    "preserve_access_time": "preserve_access_time",
    "preserve_acls": "preserve_acls",
    "preserve_creation_time": "preserve_creation_time",
    "preserve_extended_attrs": "preserve_xattrs",
    "preserve_file_owner_gid": "preserve_file_owner_gid",
    "preserve_file_owner_uid": "preserve_file_owner_uid",
    "preserve_modification_time": "preserve_modification_time",
    "preserve_remote_acls": "remote_preserve_acls",
    "preserve_remote_extended_attrs": "remote_preserve_xattrs",
    "preserve_source_access_time": "preserve_source_access_time",
    "preserve_times": "preserve_dates",
    "rate_policy": "policy",
    "remove_after_transfer": "remove_files_after_transfer",
    "remove_empty_directories": "remove_empty_directories",
    "remove_empty_source_directory": "remove_empty_source_dir",
    "resume_policy": "resume_check",
    "save_before_overwrite": "save_before_overwrite",
    "skip_duplicate_check": "skip_dir_traversal_dups",
    "skip_special_files": "skip_special_files",
    "source_root": "source_prefix",
    "src_base": "source_base",
    "ssh_port": "tcp_port",
    "sshfp": "check_ssh_fingerprint",
    "symlink_policy": "symlink_policy",
    "target_rate_kbps": "target_rate_kbps",
    "token": "token",
    "dgram_size": "datagram_size",
    "content_protection_password": "content_protection_passphrase",
}

ORDER = (
    "remote_host",
    "remote_user",
    "remote_password",
    "ssh_private_key",
    "ssh_private_key_path",
    "ssh_private_key_passphrase",
    "direction",
    "paths",
)

INFORMATIONAL = frozenset(
    {
        "title",
        "lock_min_rate",
        "lock_min_rate_kbps",
        "lock_rate_policy",
        "lock_target_rate",
        "lock_target_rate_kbps",
        "min_rate_cap_kbps",
        "target_rate_cap_kbps",
        "rate_policy_allowed",
        "cipher_allowed",
        "authentication",
        "fasp_url",
        "xfer_max_retries",
        "destination_root_id",
        "source_root_id",
        "remote_access_key",
        "use_ascp4",
        "wss_enabled",
        "wss_port",
        "https_fallback_port",
        "target_rate_percentage",
        "obfuscate_file_names",
        "content_protection",  # implied: encrypt on uploads, decrypt on downloads, whenever the password is given
    }
)

_RESUME = {0: "none", 1: "attrs", 2: "sparse_csum", 3: "full_csum"}
_TS_WORDS = {
    "file_checksum": {"sha256": "sha-256", "sha384": "sha-384", "sha512": "sha-512"},
    "cipher": {"aes128": "aes-128", "aes192": "aes-192", "aes256": "aes-256"},
}
_RATE = {"k": 1, "m": 1000, "g": 1_000_000}


def _rate(text: object) -> int:
    """``target_rate``: kbit/s with an optional k/m/g suffix (aspera-cli's pseudo-field)."""
    raw = str(text).strip().lower()
    unit = _RATE.get(raw[-1:], None)
    try:
        return int(float(raw[:-1] if unit else raw) * (unit or 1))
    except ValueError:
        raise ValueError(f"target_rate {text!r} is not kbit/s with an optional k, m or g suffix") from None


def to_options(ts: dict[str, Any]) -> TransferOptions:
    unknown = sorted(
        set(ts)
        - set(SAME)
        - set(ORDER)
        - INFORMATIONAL
        - {
            "cipher",
            "http_fallback",
            "http_fallback_port",
            "exclude_newer_than",
            "exclude_older_than",
            "tags",
            "tags64",
            "target_rate",
        }
    )
    if unknown:
        raise ValueError(f"transfer spec fields with no meaning here: {', '.join(unknown)}")
    options = TransferOptions()
    for field, name in SAME.items():
        if ts.get(field) is not None:
            setattr(options, name, ts[field])
    if ts.get("cipher") is not None:
        if str(ts["cipher"]).lower() == "none":
            options.encryption = False
        else:
            options.cipher = ts["cipher"]
    if ts.get("target_rate") is not None:  # aspera-cli: overrides target_rate_kbps
        options.target_rate_kbps = _rate(ts["target_rate"])
    for field in ("exclude_newer_than", "exclude_older_than"):
        if ts.get(field) is not None:
            setattr(options, field, int(ts[field]))
    if ts.get("http_fallback") in (True, 1, "1", "force"):
        options.http_fallback_options = HttpFallbackOptions(http_port=ts.get("http_fallback_port"))
    tags = ts.get("tags")
    if tags is None and ts.get("tags64") is not None:
        tags = json.loads(base64.b64decode(ts["tags64"]))
    if tags is not None:
        options.extra_options = [
            *(options.extra_options or []),
            "--tags64",
            base64.b64encode(json.dumps(tags).encode()).decode(),
        ]
    return options


def from_options(options: TransferOptions) -> dict[str, Any]:
    """The transfer spec of ``options`` (the fields that differ from the defaults), in the schema's spellings."""
    ts: dict[str, Any] = {}
    defaults = TransferOptions.defaults()
    for field, name in SAME.items():
        value = getattr(options, name)
        if value is None or (name in defaults and value == defaults[name]):  # a spec lists what differs
            continue
        if field == "resume_policy":
            value = _RESUME[int(value)]
        elif hasattr(value, "value"):
            value = _TS_WORDS.get(field, {}).get(value.value, value.value)
        ts[field] = value
    if options.encryption is False:
        ts["cipher"] = "none"
    elif options.cipher is not None:
        ts["cipher"] = _TS_WORDS["cipher"][options.cipher.value]
    for field in ("exclude_newer_than", "exclude_older_than"):
        if getattr(options, field) is not None:
            ts[field] = str(getattr(options, field))
    fallback = options.http_fallback_options
    if fallback is not None:
        ts["http_fallback"] = True
        if fallback.http_port is not None:
            ts["http_fallback_port"] = fallback.http_port
    extra = list(options.extra_options or [])
    if "--tags64" in extra[:-1]:
        ts["tags"] = json.loads(base64.b64decode(extra[extra.index("--tags64") + 1]))
    return ts


def order_fields(ts: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``ts`` that make the order (host, user, credentials, direction, paths)."""
    return {field: ts[field] for field in ORDER if field in ts}
