"""What a worker's operator allows orders to do: read only by the worker, never taken from an order.

A signed order proves who wrote it, not that it is harmless: a client holding
the shared key could still ask a worker to run a program (``-e``), read any of
its files, or turn host-key checks off. So each worker enforces its own policy
(environment variables, or a JSON file named by FASPQ_POLICY_FILE whose keys
are the same names without the ``FASPQ_`` prefix, lower case; the environment
wins). Everything defaults to "not allowed". An order or control message
outside the policy fails with :class:`PolicyError`, whose message names the rule.

FASPQ_READ_DIRS       local directories uploads may read from (sources, identity files, HTTPS keys)
FASPQ_WRITE_DIRS      local directories downloads may write into (destination root, manifests, moves);
                      a download never recreates the remote side's links (symlink_policy copy)
                      Both by resolved path, and a directory among them holding a link to outside (which the
                      engine would follow, reading or writing through it) is refused whole. Checked again by
                      the engine as it goes (fasp-ascp): the worker confines its engines to these directories
                      (``engine_environment``), so a link planted during a transfer is refused when followed.
FASPQ_PREPOST_PROGRAMS  ``-e`` programs orders may name (absolute paths); default none
FASPQ_EXTRA_OPTIONS   ``extra_options`` words orders may pass (exact words); default none
FASPQ_ALLOW_IGNORE_HOST_KEY  1 lets orders ask for ``ignore_host_key``; default 0
FASPQ_CONFIG_FILES    ``-f`` files orders may name; default none
FASPQ_LOG_DIRS        ``-L`` local log directories orders may name; default none
FASPQ_RATE_CAPS       ``queue=kbps`` pairs (``*`` for any queue): the highest target/min rate allowed

Lists are separated by ``os.pathsep`` (paths) or commas (words, caps).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faspmanager as fm
from tasks.orders import ORDER_TYPES


class PolicyError(ValueError):
    """An order or control message this worker's policy does not allow (the message names the rule)."""

    def __init__(self, rule: str, what: str) -> None:
        super().__init__(f"not allowed by worker policy {rule}: {what}")
        self.rule = rule


def _inside(path: str, dirs: tuple[str, ...]) -> bool:
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, d]) == d for d in dirs)


def _link_out(top: str, dirs: tuple[str, ...]) -> str | None:
    """The first link below the directory ``top`` whose target is outside ``dirs``, walked as the engine walks
    a source (links followed), or None. Links that stay inside are followed, each directory visited once."""
    seen: set[str] = set()
    stack = [top]
    while stack:
        path = stack.pop()
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(path))
        except OSError:  # unreadable or gone: the engine reports it as it meets it
            continue
        for entry in entries:
            if entry.is_symlink() and not _inside(entry.path, dirs):
                return entry.path
            if entry.is_dir():  # follows a link, which stays inside
                stack.append(entry.path)
    return None


def _cap(queue: str, kbps: object) -> int:
    try:
        return int(str(kbps))
    except ValueError:
        raise ValueError(f"FASPQ_RATE_CAPS: {queue}={kbps!r}: a cap is QUEUE=KBPS, KBPS an integer") from None


def _real_dirs(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(os.path.realpath(os.path.expanduser(v)) for v in values if v)


@dataclass(frozen=True)
class Policy:
    read_dirs: tuple[str, ...] = ()
    write_dirs: tuple[str, ...] = ()
    prepost_programs: tuple[str, ...] = ()
    extra_options: tuple[str, ...] = ()
    allow_ignore_host_key: bool = False
    config_files: tuple[str, ...] = ()
    log_dirs: tuple[str, ...] = ()
    rate_caps: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Policy:
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        if env.get("FASPQ_POLICY_FILE"):
            path = env["FASPQ_POLICY_FILE"]
            try:
                loaded = json.loads(Path(path).read_text())
                if not isinstance(loaded, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:  # one line naming the variable, as for any other FASPQ_* value
                raise ValueError(f"FASPQ_POLICY_FILE {path!r}: {exc}") from None
            data = {f"FASPQ_{k.upper()}": v for k, v in loaded.items()}
        data.update({k: v for k, v in env.items() if k.startswith("FASPQ_") and v != ""})

        def items(name: str, sep: str) -> list[str]:
            value = data.get(name) or []
            return [v.strip() for v in (value.split(sep) if isinstance(value, str) else value) if str(v).strip()]

        given = data.get("FASPQ_RATE_CAPS")
        pairs = dict(given) if isinstance(given, dict) else {}
        for pair in items("FASPQ_RATE_CAPS", ",") if not pairs else ():
            queue, _, kbps = pair.partition("=")
            pairs[queue.strip()] = kbps
        caps = {queue: _cap(queue, kbps) for queue, kbps in pairs.items()}
        return cls(
            read_dirs=_real_dirs(items("FASPQ_READ_DIRS", os.pathsep)),
            write_dirs=_real_dirs(items("FASPQ_WRITE_DIRS", os.pathsep)),
            prepost_programs=_real_dirs(items("FASPQ_PREPOST_PROGRAMS", os.pathsep)),
            extra_options=tuple(items("FASPQ_EXTRA_OPTIONS", ",")),
            allow_ignore_host_key=str(data.get("FASPQ_ALLOW_IGNORE_HOST_KEY", "0")).lower() in ("1", "true", "yes"),
            config_files=_real_dirs(items("FASPQ_CONFIG_FILES", os.pathsep)),
            log_dirs=_real_dirs(items("FASPQ_LOG_DIRS", os.pathsep)),
            rate_caps=tuple(sorted(caps.items())),
        )

    # -- checks ----------------------------------------------------------------------------------

    def engine_environment(self) -> dict[str, str]:
        """What confines the engines a worker starts to its directories, each path beneath the one holding it
        (fasp-ascp's FASP_SEND_ROOTS / FASP_RECV_ROOTS; IBM's ascp has no such thing and relies on the checks
        when an order arrives): an upload reads from READ_DIRS and removes or moves in WRITE_DIRS, a download
        writes (and resumes) in WRITE_DIRS."""
        send = dict.fromkeys(self.read_dirs + self.write_dirs)
        return {"FASP_SEND_ROOTS": os.pathsep.join(send), "FASP_RECV_ROOTS": os.pathsep.join(self.write_dirs)}

    def rate_cap(self, queue: str) -> int | None:
        caps = dict(self.rate_caps)
        return caps.get(queue, caps.get("*"))

    def check_rate(self, queue: str, kbps: int | None, what: str = "target_rate_kbps") -> None:
        cap = self.rate_cap(queue)
        if kbps is not None and cap is not None and kbps > cap:
            raise PolicyError("FASPQ_RATE_CAPS", f"{what} {kbps} above the cap {cap} of queue {queue!r}")

    def check_read(self, path: str, what: str) -> None:
        """``path`` and, for a directory, every link the engine would follow in it, inside FASPQ_READ_DIRS."""
        if not _inside(path, self.read_dirs):
            raise PolicyError("FASPQ_READ_DIRS", f"{what} {path!r} is outside the directories orders may read")
        link = _link_out(path, self.read_dirs) if os.path.isdir(path) else None
        if link is not None:
            raise PolicyError("FASPQ_READ_DIRS", f"{what} {path!r} holds {link!r}, a link to outside them")

    def check_write(self, path: str, what: str) -> None:
        """``path`` and, for a directory, every link the engine could write through in it, inside
        FASPQ_WRITE_DIRS."""
        if not _inside(path, self.write_dirs):
            raise PolicyError("FASPQ_WRITE_DIRS", f"{what} {path!r} is outside the directories orders may write")
        link = _link_out(path, self.write_dirs) if os.path.isdir(path) else None
        if link is not None:
            raise PolicyError("FASPQ_WRITE_DIRS", f"{what} {path!r} holds {link!r}, a link to outside them")

    def check_add_source(self, kind: str, options: fm.TransferOptions, source_path: str, dest_path: str) -> None:
        """A file added to a running persistent transfer: local side as for the order's own files."""
        if ORDER_TYPES[kind].upload:
            self._check_source(options, source_path)
        else:
            self.check_write(os.path.join(_local_root(options), dest_path), "dest_path")

    def check_order(self, order: fm.BaseTransferOrder, kind: str, queue: str) -> None:
        """PolicyError for the first thing ``order`` asks that this worker does not allow."""
        opts = order.options
        if (
            opts.pre_post_command_path is not None
            and os.path.realpath(opts.pre_post_command_path) not in self.prepost_programs
        ):
            raise PolicyError(
                "FASPQ_PREPOST_PROGRAMS",
                f"pre_post_command_path {opts.pre_post_command_path!r} is not an allowed program",
            )
        for word in opts.extra_options or []:
            if word not in self.extra_options:
                raise PolicyError("FASPQ_EXTRA_OPTIONS", f"extra option {word!r} is not allowed")
        if opts.ignore_host_key and not self.allow_ignore_host_key:
            raise PolicyError("FASPQ_ALLOW_IGNORE_HOST_KEY", "ignore_host_key is not allowed")
        if (
            opts.alternate_config_filename is not None
            and os.path.realpath(opts.alternate_config_filename) not in self.config_files
        ):
            raise PolicyError(
                "FASPQ_CONFIG_FILES", f"alternate_config_filename {opts.alternate_config_filename!r} is not allowed"
            )
        if opts.apply_local_docroot:
            raise PolicyError(
                "FASPQ_READ_DIRS",
                "apply_local_docroot: a worker's engines are confined to FASPQ_READ_DIRS / FASPQ_WRITE_DIRS, "
                "and an order's paths are local paths checked against them",
            )
        if opts.local_log_dir is not None and not _inside(opts.local_log_dir, self.log_dirs):
            raise PolicyError("FASPQ_LOG_DIRS", f"local_log_dir {opts.local_log_dir!r} is not allowed")
        self.check_rate(queue, opts.target_rate_kbps)
        self.check_rate(queue, opts.min_rate_kbps, "min_rate_kbps")
        identity = getattr(order, "dest_identity", None) or getattr(order, "source_identity", None)
        if identity:
            self.check_read(identity, "identity file")
        fallback = opts.http_fallback_options
        for name in ("https_key_filename", "https_cert_filename"):
            if fallback is not None and getattr(fallback, name, None):
                self.check_read(getattr(fallback, name), name)
        suffix = opts.partial_file_suffix
        if suffix is not None and ("/" in suffix or os.sep in suffix):
            raise PolicyError("FASPQ_WRITE_DIRS", "a partial_file_suffix holding a path separator")
        if opts.file_manifest_path is not None:
            self.check_write(opts.file_manifest_path, "file_manifest_path")
        if ORDER_TYPES[kind].upload:
            self._check_upload(order, opts)
        else:
            if opts.symlink_policy in (fm.SymlinkPolicy.COPY, fm.SymlinkPolicy.COPY_FORCE):
                raise PolicyError(
                    "FASPQ_WRITE_DIRS",
                    f"a download with symlink_policy {opts.symlink_policy.value} "
                    "recreates the remote side's links: one could lead out of the writable directories "
                    "and a later download write through it",
                )
            self.check_write(_local_root(opts), "destination_root")
            for dest in getattr(order, "dest_paths", None) or []:
                self.check_write(os.path.join(_local_root(opts), dest), "dest_path")

    def _check_source(self, opts: fm.TransferOptions, source: str) -> None:
        """A file to upload (the order's own, or added later): read, and written when removed or moved after."""
        for local in _local_sources(opts, source):
            self.check_read(local, "source_path")
            if opts.remove_files_after_transfer or opts.move_after_transfer_path is not None:
                self.check_write(local, "source_path (removed or moved after transfer)")

    def _check_upload(self, order: fm.BaseTransferOrder, opts: fm.TransferOptions) -> None:
        for source in getattr(order, "source_paths", []):
            self._check_source(opts, source)
        if opts.move_after_transfer_path is not None:
            self.check_write(opts.move_after_transfer_path, "move_after_transfer_path")
        if opts.remove_files_after_transfer and not getattr(order, "source_paths", None):
            self.check_write(opts.source_base or os.sep, "remove_files_after_transfer")


def _local_sources(options: fm.TransferOptions, path: str) -> tuple[str, ...]:
    """The file the engine will open, each way an engine may read --source-prefix: fasp-ascp joins it as a
    directory (``dir/..`` + ``x`` is ``dir/../x``, where the glued ``dir/..x`` is not), another may glue it."""
    prefix = options.source_prefix
    return (prefix.rstrip("/") + "/" + path.lstrip("/"), prefix + path) if prefix else (path,)


def _local_root(options: fm.TransferOptions) -> str:
    return options.destination_root or fm.TransferOptions().destination_root or "."
