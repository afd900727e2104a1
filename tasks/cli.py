"""``faspq``: enqueue, watch and steer transfers run by the Celery workers.

Passwords never go on the command line: ``--password-env VAR`` names the
variable holding it, otherwise faspq asks for it without echo. Every expected
failure (Redis unreachable, shared key missing or malformed, a bad value, an
unknown or ended transfer, no worker having loaded the queue's scripts) is one
line on stderr and exit status 1; usage errors exit 2.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import kombu.exceptions
import redis
from rich.console import Console
from rich.table import Table

import faspmanager as fm
from config.settings import SettingsError, get_settings, redacted
from faspmanager.options import _OPTIONS as OPTION_KINDS, SECRET
from faspmanager.transferspec import ORDER as ORDER_FIELDS

from .progress import TransferView
from .secrets import SecretKeyError
from .store.control import MAX_KBPS, MAX_OFFSET, ControlError
from .store.events import UnknownTransfer, progress_meta, status_session, transfer_ids
from .store.keys import TERMINAL_STATES
from .store.redisconn import redis_for, redis_user
from .store.scripts import ScriptsNotLoaded
from .transfer import celery_app

if TYPE_CHECKING:
    from .client import TransferHandle

_F = TypeVar("_F", bound=Callable[..., Any])

console = Console()


def _password(password_env: str | None, identity: str | None) -> str | None:
    if identity:
        return None
    if password_env:
        value = os.environ.get(password_env)
        if not value:
            raise click.UsageError(f"${password_env} is empty or unset")
        return value
    return click.prompt("password", hide_input=True)


def _local(path: str | None) -> str | None:
    """A local path as the worker must read it: absolute, resolved where faspq runs."""
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def _source(path: str) -> str:
    """An upload source as the order carries it: absolute. A relative one must exist here, where it is resolved;
    a file that only the worker's host has is named by its absolute path (a relative one would mean this directory)."""
    if not os.path.isabs(os.path.expanduser(path)) and not os.path.lexists(path):
        raise click.BadParameter(
            f"{path}: not found here; faspq resolves relative paths where it runs (give a file "
            "that exists only on the worker's host by its absolute path)",
            param_hint="SOURCES",
        )
    return os.path.abspath(os.path.expanduser(path))


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _option_value(name: str, text: object) -> object:
    """``--option``/``--ts`` value for TransferOption ``name``, typed as the option wants (JSON values pass as
    they are; text: ints, true/false, comma lists, enum values or names). Secrets are refused: never in argv."""
    if name not in OPTION_KINDS:
        fm.TransferOptions(**{name: None})  # the library's "unknown transfer option ..., did you mean ...?"
    option = OPTION_KINDS[name]
    if option.kind is SECRET or option.kind is fm.HttpFallbackOptions:
        raise click.BadParameter(f"{name} cannot be given on the command line")
    if not isinstance(text, str):
        return text
    if option.kind is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise click.BadParameter(f"{name} takes true or false, got {text!r}")
        return text.lower() in _TRUE
    if option.kind is int:
        try:
            return int(text)
        except ValueError:
            raise click.BadParameter(f"{name} takes an integer, got {text!r}") from None
    if option.kind is list:
        return [item for item in text.split(",") if item]
    return text


def _spec_options(spec: dict[str, Any]) -> dict[str, Any]:
    """``--ts``: TransferOptions names and values as they are, else an IBM transfer spec read the library's way
    (its order fields, remote_host and the like, are --host/--user/... here and are not read from it)."""
    if set(spec) <= set(OPTION_KINDS):
        return {name: _option_value(name, value) for name, value in spec.items()}
    ignored = sorted(set(spec) & set(ORDER_FIELDS))
    if ignored:
        click.echo(
            f"faspq: --ts: {', '.join(ignored)} not read from the transfer spec (use --host, --user, "
            "--password-env, --identity and the arguments)",
            err=True,
        )
    try:
        options = fm.TransferOptions.from_transfer_spec({k: v for k, v in spec.items() if k not in ORDER_FIELDS})
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--ts") from None
    for name in ("token", "cookie", "content_protection_passphrase"):
        if getattr(options, name, None) is not None:
            raise click.BadParameter(f"{name} cannot be given on the command line", param_hint="--ts")
    default = fm.TransferOptions()
    return {name: getattr(options, name) for name in OPTION_KINDS if getattr(options, name) != getattr(default, name)}


def _options(
    port: int,
    dest_root: str | None,
    resume: bool,
    fingerprint: str | None,
    rate: int | None,
    min_rate: int | None,
    policy: str | None,
    cipher: str | None,
    overwrite: str | None,
    checksum: str | None,
    option: tuple[str, ...],
    ts: str | None,
) -> fm.TransferOptions:
    """TransferOptions from the flags: ``--ts`` (JSON) first, then ``--option NAME=VALUE``, then the named flags."""
    # precalculate_job_size: the total, known up front
    opts: dict[str, Any] = {"tcp_port": port, "precalculate_job_size": True, "create_dirs": True}
    if resume:
        opts["resume_check"] = fm.ResumeCheck.SPARSE_CHECKSUM
    if ts:
        try:
            spec = json.loads(Path(ts[1:]).read_text() if ts.startswith("@") else ts)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--ts") from None
        if not isinstance(spec, dict):
            raise click.BadParameter(
                "a JSON object: an IBM transfer spec, or TransferOptions names and values", param_hint="--ts"
            )
        opts.update(_spec_options(spec))
    for pair in option:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"NAME=VALUE, got {pair!r}", param_hint="--option")
        opts[name.strip()] = _option_value(name.strip(), value)
    named = {
        "check_ssh_fingerprint": fingerprint,
        "target_rate_kbps": rate,
        "min_rate_kbps": min_rate,
        "policy": policy,
        "cipher": cipher,
        "overwrite_policy": overwrite,
        "file_checksum": checksum,
        "destination_root": dest_root,
    }
    opts.update({name: value for name, value in named.items() if value is not None})
    return fm.TransferOptions(**opts)


def _choice(kind: type[enum.Enum]) -> click.Choice:
    return click.Choice([member.value for member in kind], case_sensitive=False)


def _remote(f: _F) -> _F:
    for decorator in reversed(
        [
            click.option("--host", required=True, help="transfer server host"),
            click.option("--port", default=22, show_default=True, help="its SSH port"),
            click.option("--user", required=True),
            click.option("--password-env", metavar="VAR", help="environment variable holding the password"),
            click.option("--identity", type=click.Path(), help="private key file (instead of a password)"),
            click.option(
                "--check-sshfp",
                "fingerprint",
                metavar="FP",
                help="the server's host key fingerprint (SHA256:...); without it the worker's known_hosts "
                "(FASP_KNOWN_HOSTS) decides",
            ),
            click.option(
                "--rate", type=click.IntRange(1, MAX_KBPS), help="target rate, kbps (default: faspmanager's, 10000)"
            ),
            click.option("--min-rate", type=click.IntRange(0, MAX_KBPS), help="minimum rate, kbps"),
            click.option("--policy", type=_choice(fm.TransferPolicy), help="rate policy"),
            click.option("--cipher", type=_choice(fm.CipherType), help="encryption cipher"),
            click.option("--overwrite", type=_choice(fm.OverwritePolicy), help="when an existing file is replaced"),
            click.option("--checksum", type=_choice(fm.FileChecksumType), help="file checksum to report"),
            click.option(
                "--option",
                "-o",
                multiple=True,
                metavar="NAME=VALUE",
                help="any TransferOption (faspmanager names; lists comma-separated); repeatable",
            ),
            click.option(
                "--ts", metavar="JSON|@FILE", help="an IBM transfer spec, or TransferOptions names and values, as JSON"
            ),
            click.option("--resume/--no-resume", default=True, show_default=True, help="resume partial files"),
            click.option("--queue", help="Celery queue"),
            click.option("--id", "transfer_id", help="transfer id (default: random)"),
            click.option("--watch/--no-watch", default=True, show_default=True),
            FORMAT,
        ]
    ):
        f = decorator(f)
    return f


def _enqueue(
    order: fm.BaseTransferOrder, queue: str | None, transfer_id: str | None, watch: bool, fmt: str | None = None
) -> None:
    from .client import NotEnqueued, submit

    try:
        handle = submit(order, transfer_id=transfer_id, queue=queue)
    except SecretKeyError as exc:
        raise click.ClickException(f"not submitted: {exc}") from None
    except NotEnqueued as exc:
        why = (
            f"Redis user {exc.user!r} may not send to queue {exc.queue!r} at {exc.broker}"
            if exc.denied
            else f"cannot reach the broker at {exc.broker}"
        )
        raise click.ClickException(
            f"{why}: {exc.cause}; transfer {exc.transfer_id} ended FAILED (not enqueued)"
        ) from None
    click.echo(json.dumps({"type": "SUBMITTED", "transfer_id": handle.id}) if fmt == "json" else handle.id)
    if watch:
        sys.exit(_watch(handle, fmt=fmt))


def _no_worker_hint(
    handle: TransferHandle, view: TransferView, queue: str, after: float, done: threading.Event
) -> None:
    """Still QUEUED and never picked after ``after`` s: say whether any worker consumes ``queue``."""
    if done.wait(after) or handle.status().get("state") != "QUEUED" or handle.status().get("attempt"):
        return
    replies = celery_app(handle._settings).control.inspect(timeout=1.0).active_queues() or {}
    consumers = [node for node, queues in replies.items() if any(q.get("name") == queue for q in queues)]
    if done.is_set():
        return
    if consumers:
        view.note(
            f"[yellow]still queued[/] after {after:.0f} s: the workers of queue {queue!r} "
            f"({', '.join(sorted(consumers))}) are busy"
        )
    else:
        view.note(
            f"[yellow]no worker[/] consumes queue {queue!r} (still queued after {after:.0f} s); start one: "
            f"celery -A workers.app worker -Q {queue}"
        )


def _watch(handle: TransferHandle, timeout: float | None = None, fmt: str | None = None) -> int:
    """Follow a transfer to its end: live view, or (``--format json``) its events as JSON lines on stdout."""
    current = handle.status()
    if not current:
        raise click.ClickException(f"no transfer {handle.id}")
    done = threading.Event()
    with TransferView(title=f"transfer {handle.id}", json_lines=fmt == "json") as view:
        hint = threading.Thread(
            target=_no_worker_hint,
            daemon=True,
            args=(
                handle,
                view,
                current.get("queue") or handle._settings.queue,
                handle._settings.no_worker_after_s,
                done,
            ),
        )
        hint.start()
        try:
            for event in handle.events(timeout=timeout):
                view.show(event)
        except TimeoutError:
            raise click.ClickException(
                f"no news of transfer {handle.id} for {timeout:g} s (state {handle.status().get('state')}); it goes on"
            ) from None
        finally:
            done.set()
    result = view.result or handle.status().get("result") or {}
    if fmt == "json":
        return 0 if result.get("ok") else 1
    if result.get("ok"):
        console.print(f"[green]done[/] after {result.get('attempts')} attempt(s)")
        return 0
    console.print(f"[red]failed[/]: [{result.get('code')} {result.get('error')}] {result.get('reason')}")
    return 1


def _handle(transfer_id: str) -> TransferHandle:
    from .client import TransferHandle

    return TransferHandle(transfer_id)


def _steer(handle: TransferHandle, op: str, *args: object) -> Any:
    """Send one control message (nothing is sent to an unknown or ended transfer, or without the key)."""
    try:
        return getattr(handle, op)(*args)
    except ControlError as exc:
        raise click.ClickException(f"not sent: {exc}") from None


def _steered(transfer_id: str, wait_s: float, done: str, op: str, *args: object) -> None:
    """Send one control message and say what became of it: ``done`` once the running worker applied it, its
    refusal (exit 1) when the worker rejected it (policy, rate cap, a file the session refuses), or that it only
    waits in the transfer's stream (not running yet, or no answer within ``wait_s``): never "done" for a
    message the worker did not apply."""
    handle = _handle(transfer_id)
    control_id = _steer(handle, op, *args)
    running = wait_s > 0 and handle.status().get("state") == "RUNNING"
    verdict = handle.verdict(control_id, wait_s) if running else None
    if verdict is None:
        state = handle.status().get("state", "?")
        click.echo(
            f"sent to {transfer_id} ({state}), not applied yet: the worker that runs it applies or refuses it "
            f"(faspq watch {transfer_id} shows which)"
        )
    elif verdict["type"] == "CONTROL":
        click.echo(f"{done} (applied by {verdict.get('worker')})")
    elif verdict["type"] == "RESULT":
        raise click.ClickException(f"not applied: transfer {transfer_id} ended first")
    else:
        raise click.ClickException(f"refused by the worker running {transfer_id}: {verdict.get('reason')}")


WAIT = click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="seconds to wait for the worker running the transfer to apply or refuse it (0: send only)",
)


def _settings_url() -> str:
    """The events Redis URL faspq uses (the raw environment's when the settings themselves are bad)."""
    try:
        return get_settings().events_url
    except Exception:
        return os.environ.get("FASPQ_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_url() -> str:
    return redacted(_settings_url())


class _Cli(click.Group):
    """Expected failures as one line and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except redis.exceptions.NoPermissionError as exc:
            raise click.ClickException(
                f"Redis user {redis_user(_settings_url())!r} at {_redis_url()} may not do this: {exc}"
            ) from None
        except (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError) as exc:
            raise click.ClickException(f"cannot reach Redis at {_redis_url()}: {exc}") from None
        except UnknownTransfer as exc:
            raise click.ClickException(f"no transfer {exc.args[0]} (never submitted, or expired)") from None
        except ScriptsNotLoaded as exc:
            raise click.ClickException(f"Redis at {_redis_url()}: {exc}") from None
        except (SettingsError, SecretKeyError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None


def _version() -> str:
    try:
        return metadata.version("openfasp")
    except metadata.PackageNotFoundError:
        return "unknown"


FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "tsv"]),
    default=None,
    help="output: table (default on a terminal), json, tsv (default when piped)",
)


PROFILE_KEYS = {
    "host": "host",
    "port": "port",
    "user": "user",
    "password_env": "password_env",
    "identity": "identity",
    "check_sshfp": "fingerprint",
    "rate": "rate",
    "min_rate": "min_rate",
    "policy": "policy",
    "cipher": "cipher",
    "overwrite": "overwrite",
    "checksum": "checksum",
    "option": "option",
    "queue": "queue",
    "resume": "resume",
    "watch": "watch",
    "format": "fmt",
}
"""Profile keys (config file) -> the upload/download parameters they default."""


def config_path() -> Path:
    """FASPQ_CONFIG, else $XDG_CONFIG_HOME/faspq/config.toml (~/.config/faspq/config.toml)."""
    if os.environ.get("FASPQ_CONFIG"):
        return Path(os.environ["FASPQ_CONFIG"])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "faspq" / "config.toml"


def load_profile(name: str | None) -> dict[str, Any]:
    """Defaults of upload/download from the config file's ``[NAME]`` table (``[default]`` when no name is
    given: optional then). A missing file, table or a bad key is one line."""
    path = config_path()
    if not path.is_file():
        if name:
            raise click.ClickException(f"profile {name!r} asked for, but there is no config file {path}")
        return {}
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"config file {path}: {exc}") from None
    table = profiles.get(name or "default")
    if table is None:
        if name:
            raise click.ClickException(f"no profile {name!r} in {path} (it has: {', '.join(profiles) or 'none'})")
        return {}
    if not isinstance(table, dict):
        raise click.ClickException(f"{path}: [{name or 'default'}] must be a table")
    if "password" in table:
        raise click.ClickException(f"{path}: passwords do not go in the config file; name a variable (password_env)")
    unknown = set(table) - set(PROFILE_KEYS)
    if unknown:
        raise click.ClickException(
            f"profile {name or 'default'!r} in {path}: unknown keys {sorted(unknown)} "
            f"(known: {', '.join(PROFILE_KEYS)})"
        )
    defaults = {PROFILE_KEYS[key]: value for key, value in table.items()}
    if "option" in defaults and isinstance(defaults["option"], dict):
        defaults["option"] = [f"{k}={v}" for k, v in defaults["option"].items()]
    return defaults


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="faspq")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
    help="logging of faspq and the libraries it uses (stderr)",
)
@click.option(
    "--profile",
    "-p",
    metavar="NAME",
    envvar="FASPQ_PROFILE",
    help="defaults for upload/download from [NAME] of the config file (FASPQ_CONFIG, else "
    "$XDG_CONFIG_HOME/faspq/config.toml); without it, [default] if present",
)
@click.pass_context
def main(ctx: click.Context, log_level: str, profile: str | None) -> None:
    """Distributed high-speed transfers: Celery workers run them, Redis carries events and control.

    Configured by FASPQ_* variables (README, "Distributed workers"). Shell completion:
    eval "$(_FASPQ_COMPLETE=bash_source faspq)" (zsh_source, fish_source for the others)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    defaults = load_profile(profile)
    if defaults:
        ctx.default_map = {"upload": defaults, "download": defaults}


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--dest",
    default=".",
    show_default=True,
    help="destination directory on the server (made if missing: faspq passes -d, so by IBM's rule "
    "it is always a directory)",
)
@_remote
def upload(
    sources: tuple[str, ...],
    dest: str,
    host: str,
    port: int,
    user: str,
    password_env: str | None,
    identity: str | None,
    fingerprint: str | None,
    resume: bool,
    queue: str | None,
    transfer_id: str | None,
    watch: bool,
    fmt: str | None,
    **flags: Any,
) -> None:
    """Upload local SOURCES to the server (paths resolved here: the order carries them absolute)."""
    order = fm.FileUpload(
        source_paths=[_source(s) for s in sources],
        dest_user=user,
        dest_host=host,
        dest_pass=_password(password_env, identity),
        dest_identity=_local(identity),
        options=_options(port, dest, resume, fingerprint, **flags),
    )
    _enqueue(order, queue, transfer_id, watch, fmt)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--dest", default=".", show_default=True, help="local destination directory (resolved here)")
@_remote
def download(
    sources: tuple[str, ...],
    dest: str,
    host: str,
    port: int,
    user: str,
    password_env: str | None,
    identity: str | None,
    fingerprint: str | None,
    resume: bool,
    queue: str | None,
    transfer_id: str | None,
    watch: bool,
    fmt: str | None,
    **flags: Any,
) -> None:
    """Download SOURCES (remote paths) from the server."""
    order = fm.FileDownload(
        source_paths=list(sources),
        source_user=user,
        source_host=host,
        source_pass=_password(password_env, identity),
        source_identity=_local(identity),
        options=_options(port, _local(dest), resume, fingerprint, **flags),
    )
    _enqueue(order, queue, transfer_id, watch, fmt)


@main.command()
@click.argument("transfer_id")
@click.option("--timeout", type=float, help="give up after this many seconds without an event")
@FORMAT
def watch(transfer_id: str, timeout: float | None, fmt: str | None) -> None:
    """Live progress of a transfer until it ends (exit 0 on success); --format json: events as JSON lines."""
    sys.exit(_watch(_handle(transfer_id), timeout, fmt))


@main.command()
@click.argument("transfer_id")
@FORMAT
def status(transfer_id: str, fmt: str | None) -> None:
    """Where a transfer stands (JSON by default; table or tsv: one field a row)."""
    current = _handle(transfer_id).status()
    if not current:
        raise click.ClickException(f"no transfer {transfer_id}")
    if fmt in (None, "json"):
        click.echo(json.dumps(current, indent=2, default=str))
        return
    _rows(
        ("field", "value"),
        [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in current.items() if k != "last"],
        fmt,
    )


def _rows(header: tuple[str, ...], rows: list[tuple[Any, ...]], fmt: str | None) -> None:
    """Rows as a table (terminal default), tab-separated (piped default) or a JSON list of objects."""
    fmt = fmt or ("table" if sys.stdout.isatty() else "tsv")
    if fmt == "json":
        click.echo(json.dumps([dict(zip(header, row)) for row in rows], indent=2, default=str))
    elif fmt == "tsv":
        for row in (header, *rows):
            click.echo("\t".join(str(cell).replace("\t", " ") for cell in row))
    else:
        table = Table(*header)
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        console.print(table)


@main.command(name="ls")
@click.option("--all", "show_all", is_flag=True, help="include ended transfers")
@FORMAT
def list_transfers(show_all: bool, fmt: str | None) -> None:
    """Transfers and the workers running them (a table on a terminal, tab-separated otherwise)."""
    from .client import TransferHandle

    settings = get_settings()
    client = redis_for(settings.events_url)
    header = ("id", "type", "state", "owner", "attempt", "bytes", "total", "rate kbps", "eta s", "age s")
    rows = []
    now = time.time()
    for transfer_id in transfer_ids(client, settings.prefix):
        current = TransferHandle(transfer_id, settings).status()
        if not current or (current.get("state") in TERMINAL_STATES and not show_all):
            continue
        meta = progress_meta(status_session(current))
        rows.append(
            (
                transfer_id,
                current.get("order_type", "?"),
                current.get("state", "?"),
                current.get("owner", "-"),
                current.get("attempt", 0),
                meta["bytes"],
                meta["total"] or "",
                meta["rate_kbps"],
                "" if meta["eta_s"] is None else meta["eta_s"],
                round(now - float(current["created"])) if "created" in current else "",  # none: rebuilt, age unknown
            )
        )
    _rows(header, rows, fmt)


@main.command()
@click.argument("transfer_id")
@click.argument("kbps", type=click.IntRange(1, MAX_KBPS))
@WAIT
def rate(transfer_id: str, kbps: int, wait_s: float) -> None:
    """Change a transfer's target rate (kbps, at least 1); exit 1 if its worker refuses it (a rate cap)."""
    _steered(transfer_id, wait_s, f"target rate of {transfer_id} set to {kbps} kbps", "set_rate", kbps)


@main.command()
@click.argument("transfer_id")
def cancel(transfer_id: str) -> None:
    """Cancel a transfer (it ends with code 28, no retry); one still queued ends at once."""
    if _steer(_handle(transfer_id), "cancel") is None:
        click.echo(f"{transfer_id} cancelled (it was waiting for a worker): CANCELLED, 28 USER_CANCEL")
    else:
        click.echo(f"cancel of {transfer_id} sent to the worker running it (it ends with 28 USER_CANCEL)")


@main.command()
@click.argument("transfer_id")
@click.argument("source")
@click.argument("dest")
@click.option("--start", "start_offset", type=click.IntRange(0, MAX_OFFSET))
@click.option("--end", "end_offset", type=click.IntRange(0, MAX_OFFSET))
@WAIT
def add(
    transfer_id: str, source: str, dest: str, start_offset: int | None, end_offset: int | None, wait_s: float
) -> None:
    """Add a file to a persistent transfer; exit 1 if its worker refuses it (FASPQ_READ_DIRS, a bad range)."""
    done = f"{source} -> {dest} added to {transfer_id}"
    _steered(transfer_id, wait_s, done, "add_source", source, dest, start_offset, end_offset)


@main.command()
@click.argument("transfer_id")
@WAIT
def finish(transfer_id: str, wait_s: float) -> None:
    """Tell a persistent transfer that no more files come."""
    done = f"{transfer_id} told no more files come: it ends once the queued ones are done"
    _steered(transfer_id, wait_s, done, "finish")


@main.command()
def policy() -> None:
    """The worker policy this environment sets (what a worker started with it lets orders do), as JSON."""
    current = get_settings().policy
    click.echo(
        json.dumps(
            {
                "FASPQ_READ_DIRS": list(current.read_dirs),
                "FASPQ_WRITE_DIRS": list(current.write_dirs),
                "FASPQ_PREPOST_PROGRAMS": list(current.prepost_programs),
                "FASPQ_EXTRA_OPTIONS": list(current.extra_options),
                "FASPQ_ALLOW_IGNORE_HOST_KEY": current.allow_ignore_host_key,
                "FASPQ_CONFIG_FILES": list(current.config_files),
                "FASPQ_LOG_DIRS": list(current.log_dirs),
                "FASPQ_RATE_CAPS": dict(current.rate_caps),
                "FASP_KNOWN_HOSTS": os.environ.get("FASP_KNOWN_HOSTS"),
                "FASPQ_ASCP_PATH": get_settings().ascp_path,
            },
            indent=2,
        )
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8470, show_default=True, help="port to listen on (0: any free one)")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="TLS certificate chain (PEM)")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="its private key (PEM)")
def dashboard(host: str, port: int, tls_cert: str | None, tls_key: str | None) -> None:
    """Serve a live web page of the transfers, with rate and cancel controls, behind a token.

    The token is $FASPQ_DASHBOARD_TOKEN, else one drawn now and printed once inside the page's URL. Any address
    but a loopback one needs TLS (--tls-cert and --tls-key): the token must not cross a network in clear."""
    import asyncio

    from .dashboard.app import serve, tls_context
    from .dashboard.auth import Guard, TokenError, configured_token, is_loopback

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if not is_loopback(host) and not tls_cert:
        raise click.UsageError(f"--host {host} is reachable from other machines: give --tls-cert and --tls-key")
    try:
        token, drawn = configured_token()
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    tls = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None

    def ready(url: str) -> None:
        shown = f"{url}?token={token}" if drawn else f"{url} (token: $FASPQ_DASHBOARD_TOKEN)"
        click.echo(f"faspq dashboard on {shown}", nl=True)
        sys.stdout.flush()

    try:
        asyncio.run(serve(get_settings(), Guard(token, secure_cookie=tls is not None), host, port, tls, ready))
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--size-mb", default=48, show_default=True, help="data to generate and transfer")
@click.option("--files", default=4, show_default=True)
@click.option("--rate", default=400000, show_default=True, help="target rate, kbps")
@click.option("--keep", is_flag=True, help="keep the temporary directory (logs, data)")
def demo(size_mb: int, files: int, rate: int, keep: bool) -> None:
    """Everything on this host, nothing beforehand: embedded Redis, a fasp-server, a worker, a transfer."""
    from .demo import run_demo

    sys.exit(run_demo(size_mb=size_mb, files=files, rate_kbps=rate, keep=keep, console=console))


if __name__ == "__main__":
    main()
