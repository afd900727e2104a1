"""Several engine transfers through one bottleneck: ``python -m bench.crowd`` (root).

Applications enqueue transfers and workers run them side by side, so one server's link often carries several
at once. Each FAIR or HIGH flow aims to keep ``alpha`` bytes queued at the bottleneck; when the flows' alphas
together exceed its buffer, FAST's equilibrium is out of reach. This starts 1 to ``--most`` transfers of one
policy, 5 s apart, through the emulator (100 Mbit/s, 50 ms, a one-BDP buffer: 625 KB), and measures what they
offer the bottleneck and what it delivers over the 10 s after the last one started (the emulator's meter).
Prints the table and writes ``crowd.md`` and ``crowd.png`` (offered and delivered over time) under ``--out``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bench import report
from bench.peers import REPO, FaspServer, reap
from bench.report import md_table, rich_table
from bench.run import QUICK, Bench

LINK_MBIT, RTT_MS = 100, 50
APART_S, MEASURE_S = 5.0, 10.0


def crowd(bench: Bench, policy: str, count: int) -> dict:
    """``count`` transfers of ``policy`` started APART_S apart; the bottleneck's 1 s bins of their UDP."""
    sources = [bench.data.big((256 + 16 * i) << 20) for i in range(count)]  # a file each: one name per transfer
    stats = bench.workdir / f"crowd-{policy}-{count}-stats.jsonl"
    with bench.path(LINK_MBIT, RTT_MS, 0, stats) as site:
        fasp = FaspServer(site, bench.workdir, bench.dest)
        bench.clear_dest()
        fasp.start()
        engines: list[subprocess.Popen] = []
        try:
            with open(bench.logs / "crowd.log", "ab") as log:
                for source in sources:
                    argv = fasp.ascp([source], rate_kbps=LINK_MBIT * 1000, policy=policy)
                    engines.append(
                        site.popen("a", argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=fasp.client_env())
                    )
                    time.sleep(APART_S)
                time.sleep(MEASURE_S)
        finally:
            for engine in engines:
                engine.kill()
                reap(engine, 5)
            fasp.stop()
    sent, arrived = report.read_bins(stats, "ab-sent"), report.read_bins(stats)
    start = float(int(min(row["t"] for row in sent if report.engine_bytes(row["bytes"]))))  # the first data's second
    stop = int(max(row["t"] for row in sent)) + 1.0
    series = [
        (t, offered, delivered)
        for (t, offered), (_, delivered) in zip(
            report.series(sent, start, stop, report.engine_bytes),
            report.series(arrived, start, stop, report.engine_bytes),
            strict=True,
        )
    ]
    last = int(APART_S * count)  # the last transfer started APART_S before this, and had APART_S to settle
    window = series[last : last + int(MEASURE_S) - 1]
    offered = sum(row[1] for row in window) / len(window)
    delivered = sum(row[2] for row in window) / len(window)
    return {
        "policy": policy,
        "transfers": count,
        "offered_mbit_s": round(offered, 1),
        "delivered_mbit_s": round(delivered, 1),
        "lost": round(1 - delivered / offered, 3) if offered else None,
        "series": series,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = sorted({r["policy"] for r in rows})
    counts = sorted({r["transfers"] for r in rows})
    fig, axes = plt.subplots(
        len(policies), len(counts), figsize=(3.2 * len(counts), 2.6 * len(policies)), squeeze=False
    )
    for i, policy in enumerate(policies):
        for j, count in enumerate(counts):
            ax = axes[i][j]
            row = next(r for r in rows if r["policy"] == policy and r["transfers"] == count)
            t, offered, delivered = zip(*row["series"], strict=True)
            ax.plot(t, offered, label="offered")
            ax.plot(t, delivered, label="delivered")
            ax.axhline(LINK_MBIT, color="grey", linewidth=0.5)
            ax.set_title(f"{count} × {policy.upper()}", fontsize="small")
            ax.set_xlabel("s", fontsize="small")
            if j == 0:
                ax.set_ylabel("Mbit/s (UDP, all flows)", fontsize="small")
    axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.crowd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", nargs="+", default=["fair", "high"])
    parser.add_argument("--most", type=int, default=4, help="transfers at once, at most")
    parser.add_argument("--workdir", default="/tmp/fasp-bench")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench.crowd needs root (network namespaces, TUN devices, sshd)")
    console, rows = Console(), []
    points = [(policy, count) for policy in args.policies for count in range(1, args.most + 1)]
    with Progress(console=console) as progress:
        bench = Bench(QUICK, Path(args.workdir), console, progress, None, None)
        task = progress.add_task("crowd", total=len(points))
        try:
            for policy, count in points:
                progress.update(task, description=f"{count} × {policy}")
                rows.append(crowd(bench, policy, count))
                progress.advance(task)
        finally:
            bench.close()
    keys = ["policy", "transfers", "offered_mbit_s", "delivered_mbit_s", "lost"]
    title = f"Transfers at once through {LINK_MBIT} Mbit/s, {RTT_MS} ms, a one-BDP buffer"
    console.print(rich_table(title, keys, rows))
    out = Path(args.out)
    plot(rows, out / "crowd.png")
    lines = [
        "# Several engine transfers through one bottleneck",
        "",
        f"`python -m bench.crowd`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: 1 to {args.most} "
        f"transfers of one policy (target {LINK_MBIT} Mbit/s each), started {APART_S:.0f} s apart, through "
        f"{LINK_MBIT} Mbit/s, {RTT_MS} ms with a one-BDP buffer; offered and delivered UDP over the "
        f"{MEASURE_S:.0f} s after the last one started (the emulator's meter). Over time: `crowd.png`.",
        "",
        *md_table(keys, rows),
        "",
    ]
    (out / "crowd.md").write_text("\n".join(lines))
    console.log(f"wrote {out / 'crowd.md'} and {out / 'crowd.png'}")


if __name__ == "__main__":
    main()
