"""TransferOptions and HttpFallbackOptions: validated option values and their ascp spelling.

One table (``_OPTIONS``) says, per documented option, its type, default and
command-line form, so validation, ``defaults()``, ``valid_options()`` and the
flags ascp receives can never drift apart. The spellings are those of
shared/design/ascp-cli.md.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

from .constants import (
    CipherType,
    FileChecksumType,
    FileManifestFormat,
    OverwritePolicy,
    PreserveMode,
    ResumeCheck,
    SymlinkPolicy,
    TransferPolicy,
)


class HttpFallbackOptions:
    """Options for HTTP transfers when FASP's UDP connection fails."""

    def __init__(
        self,
        encode_all_as_jpeg: bool | None = None,
        http_port: int | None = None,
        https_key_filename: str | os.PathLike[str] | None = None,
        https_cert_filename: str | os.PathLike[str] | None = None,
        http_proxy_address_host: str | None = None,
        http_proxy_address_port: int | None = None,
    ) -> None:
        self.encode_all_as_jpeg = encode_all_as_jpeg
        self.http_port = http_port
        self.https_key_filename = https_key_filename
        self.https_cert_filename = https_cert_filename
        self.http_proxy_address_host = http_proxy_address_host
        self.http_proxy_address_port = http_proxy_address_port
        self._check()

    def _check(self) -> None:
        """A ValueError naming the first setting of the wrong kind: when made, and again when used (the
        attributes are plain, so they may have changed since)."""
        if self.encode_all_as_jpeg is not None and not isinstance(self.encode_all_as_jpeg, bool):
            raise ValueError(f"encode_all_as_jpeg takes True or False, got {self.encode_all_as_jpeg!r}")
        for name in ("http_port", "http_proxy_address_port"):
            if getattr(self, name) is not None:
                _port(name, getattr(self, name))
        for name in ("https_key_filename", "https_cert_filename"):
            path = getattr(self, name)
            if path is not None and (not isinstance(path, (str, os.PathLike)) or not os.fspath(path)):
                raise ValueError(f"{name} takes a path, got {path!r}")
        host = self.http_proxy_address_host
        if host is not None and (not isinstance(host, str) or not host.strip()):
            raise ValueError(f"http_proxy_address_host takes a host name, got {host!r}")

    def build_ascp_options(self) -> list[str]:
        """The ascp flags turning HTTP fallback on: ``-y 1`` plus one flag per given setting."""
        self._check()
        args = ["-y", "1"]
        if self.http_port is not None:
            args += ["-t", str(self.http_port)]
        if self.encode_all_as_jpeg:
            args += ["-j", "1"]
        if self.https_key_filename is not None:
            args += ["-Y", os.fspath(self.https_key_filename)]
        if self.https_cert_filename is not None:
            args += ["-I", os.fspath(self.https_cert_filename)]
        if self.http_proxy_address_host is not None:
            proxy = self.http_proxy_address_host
            if self.http_proxy_address_port is not None:
                proxy += f":{self.http_proxy_address_port}"
            args += ["-x", proxy]
        return args

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HttpFallbackOptions) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"HttpFallbackOptions({', '.join(f'{k}={v!r}' for k, v in vars(self).items() if v is not None)})"


def _port(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{name} must be a port number 1..65535, got {value!r}")
    return value


SECRET = "secret"
"""Kind of an option that travels in the child's environment, never in argv."""


@dataclass(frozen=True)
class _Option:
    kind: type | str  # bool, int, str, list, SECRET, an Enum class or HttpFallbackOptions
    flag: str | None = None  # None: not a flag (positional, environment, or used elsewhere)
    default: object = None
    minimum: int = 0
    maximum: int | None = None
    env: str | None = None  # for secrets: the environment variable
    when_false: bool = False  # the flag means the option is off (encryption=False -> -T)
    ours_only: bool = False  # a flag of our engine that IBM's ascp documents none of: given to our engine only


DEFAULT_CHUNK_SIZE = 64 * 1024
DEFAULT_DESTINATION_ROOT = "."  # relative: the remote user's home (or docroot), as ascp reads it
DEFAULT_POLICY = TransferPolicy.FAIR

_OPTIONS: dict[str, _Option] = {
    "alternate_config_filename": _Option(str, "-f"),
    "apply_local_docroot": _Option(bool, "--apply-local-docroot", False),
    "auto_detect_capacity": _Option(bool, "--auto-detect-capacity", False),
    "check_ssh_fingerprint": _Option(str, "--check-sshfp"),
    "chunk_size": _Option(int, None, DEFAULT_CHUNK_SIZE, minimum=1),  # stream orders add --chunk-size
    "cipher": _Option(CipherType, "-c"),
    "content_protection_passphrase": _Option(SECRET, env="ASPERA_SCP_FILEPASS"),
    "cookie": _Option(SECRET, env="ASPERA_SCP_COOKIE"),
    "create_dirs": _Option(bool, "-d", False),
    "datagram_size": _Option(int, "-Z", minimum=296, maximum=65000),  # ascp's range
    "delete_before_transfer": _Option(bool, "--delete-before-transfer", False),
    "destination_root": _Option(str, None, DEFAULT_DESTINATION_ROOT),  # the destination argument
    "encryption": _Option(bool, "-T", True, when_false=True),
    # seconds since the epoch, or negative: that many seconds before the session starts (ascp's -N form)
    "exclude_newer_than": _Option(int, "--exclude-newer-than", minimum=-(1 << 62)),
    "exclude_older_than": _Option(int, "--exclude-older-than", minimum=-(1 << 62)),
    "exclude_patterns": _Option(list, "-E"),
    "extra_options": _Option(list),
    "file_checksum": _Option(FileChecksumType, "--file-checksum"),
    "file_manifest_format": _Option(FileManifestFormat, "--file-manifest"),
    "file_manifest_path": _Option(str, "--file-manifest-path"),
    "http_fallback_options": _Option(HttpFallbackOptions),
    "ignore_host_key": _Option(bool, "--ignore-host-key", False),
    "local_log_dir": _Option(str, "-L"),
    "min_rate_kbps": _Option(int, "-m", 0),
    "move_after_transfer_path": _Option(str, "--move-after-transfer"),
    "multi_session_threshold": _Option(int, "--multi-session-threshold"),
    "overwrite_policy": _Option(OverwritePolicy, "--overwrite"),
    # the reference's default: a file cut off mid-way is never taken for a complete one; None or "" opts out
    "partial_file_suffix": _Option(str, "--partial-file-suffix", ".partial"),
    "policy": _Option(TransferPolicy, "--policy", DEFAULT_POLICY),
    "pre_post_command_path": _Option(str, "-e"),
    "precalculate_job_size": _Option(bool, "--precalculate-job-size", False),
    "preserve_access_time": _Option(bool, "--preserve-access-time", False),
    "preserve_acls": _Option(PreserveMode, "--preserve-acls"),
    "preserve_creation_time": _Option(bool, "--preserve-creation-time", False),
    "preserve_dates": _Option(bool, "-p", False),
    "preserve_file_owner_gid": _Option(bool, "--preserve-file-owner-gid", False),
    "preserve_file_owner_uid": _Option(bool, "--preserve-file-owner-uid", False),
    "preserve_modification_time": _Option(bool, "--preserve-modification-time", False),
    "preserve_source_access_time": _Option(bool, "--preserve-source-access-time", False),
    "preserve_xattrs": _Option(PreserveMode, "--preserve-xattrs"),
    "read_size": _Option(int, "-g", minimum=1),
    "remote_log_dir": _Option(str, "-R"),
    "remote_preserve_acls": _Option(PreserveMode, "--remote-preserve-acls"),
    "remote_preserve_xattrs": _Option(PreserveMode, "--remote-preserve-xattrs"),
    "remove_empty_directories": _Option(bool, "--remove-empty-directories", False),
    "remove_empty_source_dir": _Option(bool, "--remove-empty-source-directory", False),
    "remove_files_after_transfer": _Option(bool, "--remove-after-transfer", False),
    "resume_check": _Option(ResumeCheck, "-k"),
    "retransmission_request_max_size": _Option(int, "-X", maximum=1440),
    # the library does not retry: the value only informs monitoring (our engine reports it in INIT)
    "retry_timeout": _Option(int, "--retry-timeout", ours_only=True),
    "save_before_overwrite": _Option(bool, "--save-before-overwrite", False),
    "skip_dir_traversal_dups": _Option(bool, "--skip-dir-traversal-dupes", False),
    "skip_special_files": _Option(bool, "--skip-special-files", False),
    "source_base": _Option(str, "--src-base"),
    "source_prefix": _Option(str, "--source-prefix"),
    "symlink_policy": _Option(SymlinkPolicy, "--symbolic-links"),
    "target_rate_kbps": _Option(int, "-l", 10000, minimum=1),  # ascp refuses -l 0
    "tcp_port": _Option(int, "-P", 22, minimum=1, maximum=65535),
    "token": _Option(SECRET, env="ASPERA_SCP_TOKEN"),
    "udp_port": _Option(int, "-O", 33001, minimum=1, maximum=65535),
    "write_size": _Option(int, "-G", minimum=1),
}


def _render(option: _Option, value: object) -> list[str]:
    """The argv words for one option value (empty when it adds nothing)."""
    if value is None or option.flag is None:
        return []
    if option.kind is bool:
        return [option.flag] if bool(value) != option.when_false else []
    if option.kind is list:
        return [word for item in cast("list[str]", value) for word in (option.flag, item)]
    text = str(value.value) if isinstance(value, Enum) else str(value)
    return [f"{option.flag}={text}"] if option.flag.startswith("--") else [option.flag, text]


def _validate(name: str, value: object) -> object:
    option = _OPTIONS.get(name)
    if option is None:
        near = difflib.get_close_matches(name, _OPTIONS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown transfer option {name!r}{hint}")
    if value is None:
        return None
    kind = option.kind
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"option {name} takes True or False, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"option {name} takes an int, got {type(value).__name__} {value!r}")
        if value < option.minimum or (option.maximum is not None and value > option.maximum):
            top = option.maximum if option.maximum is not None else "any"
            raise ValueError(f"option {name} must be between {option.minimum} and {top}, got {value}")
        return value
    if kind in (str, SECRET):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise ValueError(f"option {name} takes a str, got {type(value).__name__} {value!r}")
        return value
    if kind is list:
        items = cast("Iterable[object]", value)  # not iterable at all: all() raises TypeError
        if isinstance(value, (str, bytes)) or not all(isinstance(item, str) for item in items):
            raise ValueError(f"option {name} takes a list of str, got {value!r}")
        return list(items)
    if kind is HttpFallbackOptions:
        if not isinstance(value, HttpFallbackOptions):
            raise ValueError(f"option {name} takes an HttpFallbackOptions, got {value!r}")
        return value
    return _enum(name, cast("type[Enum]", kind), value)  # every other kind is a constant class


TS_SPELLINGS: dict[type, dict[str, object]] = {
    CipherType: {
        "aes-128": "aes128",
        "aes-192": "aes192",
        "aes-256": "aes256",
        **{f"aes-{n}-{mode}": f"aes{n}" for n in (128, 192, 256) for mode in ("gcm", "cfb")},
    },
    FileChecksumType: {"sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512", "sha-1": "sha1"},
    ResumeCheck: {
        "none": 0,
        "attrs": 1,
        "sparse_csum": 2,
        "full_csum": 3,
        "attributes": 1,
        "sparse_checksum": 2,
        "full_checksum": 3,
    },
}
"""IBM transfer-spec values (spec.schema.yaml's enums, and transferd's resume words) for our constants. A cipher's
mode (gcm, cfb) names IBM's cipher; this engine keeps the key size and seals with AES-GCM whatever the name."""


def _enum(name: str, kind: type[Enum], value: object) -> Enum:
    if isinstance(value, kind):
        return value
    if isinstance(value, Enum) or isinstance(value, bool):
        raise ValueError(f"option {name} takes a {kind.__name__} constant, got {value!r}")
    if isinstance(value, str):
        value = TS_SPELLINGS.get(kind, {}).get(value.lower(), value)
    try:
        return kind(value)
    except ValueError:
        if isinstance(value, str) and value.upper() in kind.__members__:
            return kind.__members__[value.upper()]
    choices = ", ".join(f"{kind.__name__}.{m.name}" for m in kind)
    raise ValueError(f"option {name} takes a {kind.__name__} constant ({choices}), got {value!r}")


class TransferOptions:
    """Optional transfer parameters (rate, ports, overwrite policy...), validated on assignment."""

    DEFAULT_CHUNK_SIZE = DEFAULT_CHUNK_SIZE
    DEFAULT_DESTINATION_ROOT = DEFAULT_DESTINATION_ROOT
    DEFAULT_POLICY = DEFAULT_POLICY

    def __init__(self, **kwargs: Any) -> None:
        object.__setattr__(self, "opts", self.defaults())
        for name, value in kwargs.items():
            setattr(self, name, value)
        self._check_rates()

    def _check_rates(self) -> None:
        """ascp refuses -m above -l where both are kbit/s (with auto_detect_capacity -l is a percent). Checked
        once all are given, and again when used: options set one at a time may pass through such a state."""
        minimum, target = self.opts.get("min_rate_kbps"), self.opts.get("target_rate_kbps")
        if (
            minimum is not None
            and target is not None
            and minimum > target
            and not self.opts.get("auto_detect_capacity")
        ):
            raise ValueError(f"min_rate_kbps {minimum} is above target_rate_kbps {target}")

    @staticmethod
    def defaults() -> dict[str, Any]:
        """The options every order has unless told otherwise."""
        return {name: option.default for name, option in _OPTIONS.items() if option.default is not None}

    @staticmethod
    def valid_options() -> list[str]:
        return list(_OPTIONS)

    def __getattr__(self, name: str) -> Any:
        if name in _OPTIONS:
            return self.opts.get(name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: object) -> None:
        value = _validate(name, value)
        if value is None:
            self.opts.pop(name, None)
        else:
            self.opts[name] = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransferOptions) and self.opts == other.opts

    def __repr__(self) -> str:
        shown = {k: ("***" if _OPTIONS[k].kind is SECRET else v) for k, v in self.opts.items()}
        return f"TransferOptions({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def ascp_args(self, our_engine: bool = False) -> list[str]:
        """The flags for every set option, in documentation order (secrets excluded). ``our_engine``: the
        program is our engine, which also takes the flags IBM's ascp has no equivalent of (--retry-timeout)."""
        self._check_rates()
        args: list[str] = []
        for name, option in _OPTIONS.items():
            if option.ours_only and not our_engine:
                continue
            value = self.opts.get(name)
            if name == "target_rate_kbps" and self.opts.get("auto_detect_capacity") and value == option.default:
                value = 100  # the reference: "Default: 10000 (Or 100% when autoDetectCapacity is turned on)"
            if option.kind is HttpFallbackOptions and value is not None:
                args += value.build_ascp_options()
            else:
                args += _render(option, value)
        return args

    @classmethod
    def from_transfer_spec(cls, ts: str | bytes | dict[str, Any]) -> TransferOptions:
        """Options from an IBM transfer spec (a dict, or its JSON text): see faspmanager/transferspec.py."""
        from .transferspec import to_options

        return to_options(json.loads(ts) if isinstance(ts, (str, bytes)) else ts)

    def to_transfer_spec(self) -> dict[str, Any]:
        """These options as an IBM transfer spec (the fields they set); from_transfer_spec reads it back."""
        from .transferspec import from_options

        return from_options(self)

    def ascp_env(self) -> dict[str, str]:
        """The secret options as the environment variables ascp reads them from."""
        return {
            option.env: self.opts[name]
            for name, option in _OPTIONS.items()
            if option.kind is SECRET and option.env is not None and self.opts.get(name) is not None
        }
