"""``faspq``: enqueue, watch and steer transfers run by the Celery workers.

Passwords never go on the command line: ``--password-env VAR`` names the
variable holding it, otherwise faspq asks for it without echo. Every expected
failure (Redis unreachable, shared key missing or malformed, a bad value, an
unknown or ended transfer) is one line on stderr and exit status 1; usage
errors exit 2.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import click
import kombu.exceptions
import redis
from rich.console import Console
from rich.table import Table

import faspmanager as fm
from config.settings import SettingsError, get_settings, redacted
from workers.control import ControlError
from workers.events import UnknownTransfer
from workers.keys import TERMINAL_STATES
from workers.redisconn import redis_for

from .progress import TransferView
from .secrets import SecretKeyError

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


def _options(port: int, rate: int | None, dest_root: str | None, extra: dict,
             fingerprint: str | None = None) -> fm.TransferOptions:
    opts = {"tcp_port": port, "precalculate_job_size": True, **extra}  # the total, known up front
    if fingerprint:
        opts["check_ssh_fingerprint"] = fingerprint
    if rate:
        opts["target_rate_kbps"] = rate
    if dest_root:
        opts["destination_root"] = dest_root
    return fm.TransferOptions(**opts)


def _remote(f):
    for decorator in reversed([
        click.option("--host", required=True, help="transfer server host"),
        click.option("--port", default=22, show_default=True, help="its SSH port"),
        click.option("--user", required=True),
        click.option("--password-env", metavar="VAR", help="environment variable holding the password"),
        click.option("--identity", type=click.Path(), help="private key file (instead of a password)"),
        click.option("--check-sshfp", "fingerprint", metavar="FP",
                     help="the server's host key fingerprint (SHA256:...); without it the worker's known_hosts "
                          "(FASP_KNOWN_HOSTS) decides"),
        click.option("--rate", type=int, help="target rate, kbps"),
        click.option("--resume/--no-resume", default=True, show_default=True, help="resume partial files"),
        click.option("--queue", help="Celery queue"),
        click.option("--id", "transfer_id", help="transfer id (default: random)"),
        click.option("--watch/--no-watch", default=True, show_default=True),
    ]):
        f = decorator(f)
    return f


def _enqueue(order, queue, transfer_id, watch) -> None:
    from .client import submit
    try:
        handle = submit(order, transfer_id=transfer_id, queue=queue)
    except SecretKeyError as exc:
        raise click.ClickException(f"not submitted: {exc}") from None
    click.echo(handle.id)
    if watch:
        sys.exit(_watch(handle))


def _no_worker_hint(handle, view: TransferView, queue: str, after: float, done: threading.Event) -> None:
    """Still QUEUED and never picked after ``after`` s: say whether any worker consumes ``queue``."""
    if done.wait(after) or handle.status().get("state") != "QUEUED" or handle.status().get("attempt"):
        return
    from workers.app import app_for
    replies = app_for(handle._settings).control.inspect(timeout=1.0).active_queues() or {}
    consumers = [node for node, queues in replies.items() if any(q.get("name") == queue for q in queues)]
    if done.is_set():
        return
    if consumers:
        view.note(f"[yellow]still queued[/] after {after:.0f} s: the workers of queue {queue!r} "
                  f"({', '.join(sorted(consumers))}) are busy")
    else:
        view.note(f"[yellow]no worker[/] consumes queue {queue!r} (still queued after {after:.0f} s); start one: "
                  f"celery -A workers.app worker -Q {queue}")


def _watch(handle, timeout: float | None = None) -> int:
    current = handle.status()
    if not current:
        raise click.ClickException(f"no transfer {handle.id}")
    done = threading.Event()
    with TransferView(title=f"transfer {handle.id}") as view:
        hint = threading.Thread(target=_no_worker_hint, daemon=True,
                                args=(handle, view, current.get("queue") or handle._settings.queue,
                                      handle._settings.no_worker_after_s, done))
        hint.start()
        try:
            for event in handle.events(timeout=timeout):
                view.show(event)
        except TimeoutError:
            raise click.ClickException(f"no news of transfer {handle.id} for {timeout:g} s "
                                       f"(state {handle.status().get('state')}); it goes on") from None
        finally:
            done.set()
    result = view.result or handle.status().get("result") or {}
    if result.get("ok"):
        console.print(f"[green]done[/] after {result.get('attempts')} attempt(s)")
        return 0
    console.print(f"[red]failed[/]: [{result.get('code')} {result.get('error')}] {result.get('reason')}")
    return 1


def _handle(transfer_id: str):
    from .client import TransferHandle
    return TransferHandle(transfer_id)


def _steer(transfer_id: str, op: str, *args):
    """Send one control message (nothing is sent to an unknown or ended transfer, or without the key)."""
    try:
        return getattr(_handle(transfer_id), op)(*args)
    except ControlError as exc:
        raise click.ClickException(f"not sent: {exc}") from None


def _redis_url() -> str:
    try:
        return redacted(get_settings().events_url)
    except Exception:
        return redacted(os.environ.get("FASPQ_REDIS_URL", "redis://127.0.0.1:6379/0"))


class _Cli(click.Group):
    """Expected failures as one line and exit 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError) as exc:
            raise click.ClickException(f"cannot reach Redis at {_redis_url()}: {exc}") from None
        except UnknownTransfer as exc:
            raise click.ClickException(f"no transfer {exc.args[0]} (never submitted, or expired)") from None
        except (SettingsError, SecretKeyError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Cli)
def main() -> None:
    """Distributed high-speed transfers: Celery workers run them, Redis carries events and control."""


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--dest", default=".", show_default=True,
              help="destination on the server; as with ascp, a lone file sent to a path that is not an "
                   "existing directory is stored under that name")
@_remote
def upload(sources, dest, host, port, user, password_env, identity, fingerprint, rate, resume, queue, transfer_id,
           watch):
    """Upload local SOURCES to the server."""
    extra = {"resume_check": fm.ResumeCheck.SPARSE_CHECKSUM} if resume else {}
    order = fm.FileUpload(source_paths=[os.path.abspath(s) for s in sources], dest_user=user, dest_host=host,
                          dest_pass=_password(password_env, identity), dest_identity=_local(identity),
                          options=_options(port, rate, dest, {**extra, "create_dirs": True}, fingerprint))
    _enqueue(order, queue, transfer_id, watch)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--dest", default=".", show_default=True, help="local destination directory (on the worker)")
@_remote
def download(sources, dest, host, port, user, password_env, identity, fingerprint, rate, resume, queue, transfer_id,
             watch):
    """Download SOURCES from the server."""
    extra = {"resume_check": fm.ResumeCheck.SPARSE_CHECKSUM} if resume else {}
    order = fm.FileDownload(source_paths=list(sources), source_user=user, source_host=host,
                            source_pass=_password(password_env, identity), source_identity=_local(identity),
                            options=_options(port, rate, os.path.abspath(dest), {**extra, "create_dirs": True},
                                             fingerprint))
    _enqueue(order, queue, transfer_id, watch)


@main.command()
@click.argument("transfer_id")
@click.option("--timeout", type=float, help="give up after this many seconds without an event")
def watch(transfer_id, timeout):
    """Live progress of a transfer until it ends (exit 0 on success)."""
    sys.exit(_watch(_handle(transfer_id), timeout))


@main.command()
@click.argument("transfer_id")
def status(transfer_id):
    """Where a transfer stands (JSON)."""
    current = _handle(transfer_id).status()
    if not current:
        raise click.ClickException(f"no transfer {transfer_id}")
    click.echo(json.dumps(current, indent=2, default=str))


@main.command(name="ls")
@click.option("--all", "show_all", is_flag=True, help="include ended transfers")
def list_transfers(show_all):
    """Transfers and the workers running them (a table on a terminal, tab-separated otherwise)."""
    settings = get_settings()
    client = redis_for(settings.events_url)
    header = ("id", "type", "state", "owner", "attempt", "bytes", "rate kbps", "age s")
    rows = []
    now = time.time()
    from .client import TransferHandle
    for key in sorted(client.scan_iter(match=f"{settings.prefix}:status:*", count=500)):
        transfer_id = key.decode().rsplit(":", 1)[1]
        current = TransferHandle(transfer_id, settings).status()
        if not current or (current.get("state") in TERMINAL_STATES and not show_all):
            continue
        session = (current.get("last") or {}).get("session") or {}
        rows.append((transfer_id, current.get("order_type", "?"), current.get("state", "?"),
                     current.get("owner", "-"), str(current.get("attempt", 0)), str(session.get("transfer_bytes", "")),
                     str(session.get("rate", "")), f"{now - float(current.get('created', now)):.0f}"))
    if not sys.stdout.isatty():
        for row in (header, *rows):
            click.echo("\t".join(row))
        return
    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@main.command()
@click.argument("transfer_id")
@click.argument("kbps", type=click.IntRange(min=1))
def rate(transfer_id, kbps):
    """Change a transfer's target rate (kbps, at least 1)."""
    _steer(transfer_id, "set_rate", kbps)
    click.echo(f"target rate of {transfer_id} set to {kbps} kbps (applied by the worker that runs it)")


@main.command()
@click.argument("transfer_id")
def cancel(transfer_id):
    """Cancel a transfer (it ends with code 28, no retry); one still queued ends at once."""
    if _steer(transfer_id, "cancel") is None:
        click.echo(f"{transfer_id} cancelled (it was waiting for a worker): FAILED, 28 USER_CANCEL")
    else:
        click.echo(f"cancel of {transfer_id} sent to the worker running it (it ends with 28 USER_CANCEL)")


@main.command()
@click.argument("transfer_id")
@click.argument("source")
@click.argument("dest")
@click.option("--start", "start_offset", type=int)
@click.option("--end", "end_offset", type=int)
def add(transfer_id, source, dest, start_offset, end_offset):
    """Add a file to a persistent transfer."""
    _steer(transfer_id, "add_source", source, dest, start_offset, end_offset)
    click.echo(f"{source} -> {dest} added to {transfer_id}")


@main.command()
@click.argument("transfer_id")
def finish(transfer_id):
    """Tell a persistent transfer that no more files come."""
    _steer(transfer_id, "finish")
    click.echo(f"{transfer_id} told no more files come: it ends once the queued ones are done")


@main.command()
def policy():
    """The worker policy this environment sets (what a worker started with it lets orders do), as JSON."""
    current = get_settings().policy
    click.echo(json.dumps({
        "FASPQ_READ_DIRS": list(current.read_dirs), "FASPQ_WRITE_DIRS": list(current.write_dirs),
        "FASPQ_PREPOST_PROGRAMS": list(current.prepost_programs), "FASPQ_EXTRA_OPTIONS": list(current.extra_options),
        "FASPQ_ALLOW_IGNORE_HOST_KEY": current.allow_ignore_host_key,
        "FASPQ_CONFIG_FILES": list(current.config_files), "FASPQ_LOG_DIRS": list(current.log_dirs),
        "FASPQ_RATE_CAPS": dict(current.rate_caps), "FASP_KNOWN_HOSTS": os.environ.get("FASP_KNOWN_HOSTS"),
        "FASPQ_ASCP_PATH": get_settings().ascp_path}, indent=2))


@main.command()
@click.option("--size-mb", default=48, show_default=True, help="data to generate and transfer")
@click.option("--files", default=4, show_default=True)
@click.option("--rate", default=400000, show_default=True, help="target rate, kbps")
@click.option("--keep", is_flag=True, help="keep the temporary directory (logs, data)")
def demo(size_mb, files, rate, keep):
    """Everything on this host, nothing beforehand: embedded Redis, a fasp-server, a worker, a transfer."""
    from .demo import run_demo
    sys.exit(run_demo(size_mb=size_mb, files=files, rate_kbps=rate, keep=keep, console=console))


if __name__ == "__main__":
    main()
