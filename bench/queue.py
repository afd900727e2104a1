"""Many small orders through the queue: how many transfers a second, and how long each waits.

    python -m bench.queue                    # 200 uploads of 64 KiB, 2 workers x 4 threads
    python -m bench.queue --transfers 50 --cold

A throwaway deployment on this host (tasks.local: redis-server, one fasp-server, celery workers), every
order submitted at once, then each one's result, events and arrived bytes checked: all ok, each picked
ended exactly once (one RESULT event; a retry, counted, is a resumed second attempt of the same transfer),
size and sha256 of every file. Submit-to-done is the time
from the moment before ``submit()`` to the RESULT event's own timestamp (the worker's clock: the same host).
``--cold`` turns the warm engines off (FASPMANAGER_WARM=0 for the workers, ``--cold-engines`` for fasp-server):
the way it ran before them; ``--both`` runs cold then warm, for a before/after in one run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import faspmanager as fm
from tasks.local import RedisServer, TransferServer, Worker, descendants
from tasks.secrets import generate_key

FILE_BYTES = 64 << 10


def _env(redis_url: str, root: Path, warm: bool) -> dict[str, str]:
    return {
        "FASPQ_REDIS_URL": redis_url,
        "FASPQ_SECRET_KEY": generate_key().decode(),
        "FASPQ_PREFIX": "bq",
        "FASPQ_READ_DIRS": str(root),
        "FASPQ_WRITE_DIRS": str(root),
        "FASPQ_CLIENT_NAME": "bench",
        "FASPMANAGER_WARM": "1" if warm else "0",
    }


def _ticks(pid: int) -> list[int]:
    """utime, stime, cutime, cstime of ``pid`` (/proc/PID/stat fields 14-17); zeros once it is gone."""
    try:
        return [int(v) for v in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:15]]
    except OSError:
        return [0, 0, 0, 0]


def _cpu(services: dict[str, list]) -> dict[str, float]:
    """CPU seconds per group of services: the processes themselves (``name``) and everything they started,
    live or reaped (``name_children``: the engines, a fork server and its forks)."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, group in services.items():
        own = below = 0
        for service in group:
            ticks = _ticks(service.process.pid)
            own += ticks[0] + ticks[1]
            below += ticks[2] + ticks[3] + sum(sum(_ticks(d)) for d in descendants(service.process.pid))
        out[name], out[f"{name}_children"] = own / hz, below / hz
    return out


def _key_pair(root: Path) -> tuple[Path, Path]:
    """An ed25519 key (private file 0600) and an authorized_keys file naming it."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    private, authorized = root / "id_ed25519", root / "authorized_keys"
    key.write_private_key(str(private))
    os.chmod(private, 0o600)
    key.write_public_key(str(authorized))
    return private, authorized


def run(transfers: int, workers: int, threads: int, warm: bool, root: Path, auth: str = "password") -> dict:
    """One measured batch; raises AssertionError if any transfer is lost, repeated, failed or damaged."""
    from tasks.client import submit  # reads FASPQ_* from the environment set below

    shutil.rmtree(root, ignore_errors=True)
    (root / "src").mkdir(parents=True)
    identity, authorized = _key_pair(root)
    redis_server = RedisServer(root / "redis", password=secrets.token_hex(16))
    env = _env(redis_server.url, root, warm)
    os.environ.update(env)
    services: list = [redis_server]
    try:
        server = TransferServer(
            root / "server",
            "bench",
            secrets.token_urlsafe(16),
            root / "docroot",
            extra_args=(*(("--authorized-keys", str(authorized)) if auth == "key" else ()),)
            + (() if warm else ("--cold-engines",)),
        )
        services.append(server)
        fingerprint = server.host_key_fingerprint()
        pool = [
            Worker(f"bq{i}", {**os.environ, **env}, root / f"worker{i}.log", concurrency=threads)
            for i in range(workers)
        ]
        services += pool
        for worker in pool:
            worker.wait_ready()
        digests = []
        for i in range(transfers):
            data = os.urandom(FILE_BYTES)
            (root / "src" / f"f{i:04d}.bin").write_bytes(data)
            digests.append(hashlib.sha256(data).hexdigest())
            (root / "docroot" / f"t{i}").mkdir()
        parts = {"redis": [redis_server], "server": [server], "workers": pool}
        cpu_before = _cpu(parts)
        started, handles = [], []
        t0 = time.time()
        for i in range(transfers):
            order = fm.FileUpload(
                source_paths=[str(root / "src" / f"f{i:04d}.bin")],
                dest_user=server.user,
                dest_host=server.host,
                dest_pass=server.password if auth == "password" else None,
                dest_identity=str(identity) if auth == "key" else None,
                options=fm.TransferOptions(
                    tcp_port=server.port, destination_root=f"t{i}", check_ssh_fingerprint=fingerprint
                ),
            )
            started.append(time.time())
            handles.append(submit(order))
        latencies, last_done, retries = [], t0, 0
        for i, handle in enumerate(handles):
            result = handle.wait(timeout=600)
            assert result["ok"], (i, result)
            events = list(handle.events(from_start=True))
            assert sum(e["type"] == "RESULT" for e in events) == 1, (i, events)  # ended exactly once
            retries += result.get("attempts", 1) - 1
            done = next(e["time"] for e in reversed(events) if e["type"] == "RESULT")
            latencies.append(done - started[i])
            last_done = max(last_done, done)
            arrived = root / "docroot" / f"t{i}" / f"f{i:04d}.bin"
            body = arrived.read_bytes()
            assert len(body) == FILE_BYTES and hashlib.sha256(body).hexdigest() == digests[i], arrived
        cpu_after = _cpu(parts)
        cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
        wall = last_done - t0
        latencies.sort()
        return {
            "scenario": "queue",
            "mode": "warm" if warm else "cold",
            "auth": auth,
            "transfers": transfers,
            "workers": f"{workers}x{threads}",
            "seconds": round(wall, 2),
            "per_s": round(transfers / wall, 1),
            "p50_s": round(statistics.median(latencies), 2),
            "p95_s": round(latencies[max(0, int(len(latencies) * 0.95) - 1)], 2),
            "retries": retries,
            "cpu_ms_per_transfer": round(1000 * sum(cpu.values()) / transfers),
            **{f"cpu_ms_{name}": round(1000 * seconds / transfers) for name, seconds in cpu.items()},
            "load": os.getloadavg()[0],
        }
    finally:
        for service in reversed(services):
            service.kill()


def table(rows: list[dict]) -> str:
    head = (
        "| mode | auth | transfers | workers | seconds | transfers/s | p50 s | p95 s | retries "
        "| CPU ms/transfer: all | server | its engines | workers | their engines | redis | load |"
    )
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        cells = [r["mode"], r["auth"], r["transfers"], r["workers"], r["seconds"], r["per_s"], r["p50_s"]]
        cells += [r["p95_s"], r["retries"], r["cpu_ms_per_transfer"], r["cpu_ms_server"]]
        cells += [r["cpu_ms_server_children"], r["cpu_ms_workers"], r["cpu_ms_workers_children"], r["cpu_ms_redis"]]
        cells.append(f"{r['load']:.2f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queue", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--cold", action="store_true", help="only the cold path (no warm engines)")
    parser.add_argument("--both", action="store_true", help="cold then warm, in one run")
    parser.add_argument(
        "--auth",
        action="append",
        choices=("password", "key"),
        help="how orders log in (repeatable; default password): a password costs the server a 0.3 s scrypt check "
        "per SSH login, a key one signature check",
    )
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "fasp-bench-queue"))
    args = parser.parse_args(argv)
    modes = [False, True] if args.both else [not args.cold]
    rows = [
        run(args.transfers, args.workers, args.threads, warm, Path(args.workdir), auth)
        for auth in args.auth or ["password"]
        for warm in modes
    ]
    print(table(rows))


if __name__ == "__main__":
    main()
