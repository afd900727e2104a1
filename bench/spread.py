"""Can a receiver read the bottleneck's rate here? ``python -m bench.spread`` (root).

The engine's sharing goals beside TCP BBR need the link's capacity while another flow keeps its buffer full
(docs/benchmarks, the 2026-12-05 20:24 entry). The bottleneck spreads two packets sent back to back to one
packet's serialization time, whatever else waits in its queue, so the gap the receiver's kernel timestamps show
is the link's rate. This runs ``bench.probe``'s pairs through the emulator (50 ms) at each link rate, alone and
beside one iperf3 TCP flow per congestion control, prints the table and writes ``spread.md`` under ``--out``:
where the median gap gives the link's rate, a capacity estimate built on it can be tested here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bench.peers import REPO, reap
from bench.report import md_table, rich_table
from bench.run import HOSTS
from bench.wan import Wan

PAIR_BYTES = 1500  # on the link: the probe's 1,472-byte datagrams and their IP and UDP headers
SECONDS = 8.0
WARMUP = 4.0  # the TCP flow's, before the pairs go: it fills the queue first


def probe(site: Wan, side: str, *args: str, **kwargs) -> subprocess.Popen:
    return site.popen(side, [sys.executable, "-m", "bench.probe", *args], cwd=REPO, text=True, **kwargs)


def gaps(mbit: int, beside: str) -> list[float]:
    """The arrival gaps (us) of the pairs sent across ``mbit`` Mbit/s, 50 ms, alone or beside TCP ``beside``."""
    with Wan(mbit, 50, 0, hosts=HOSTS) as site:
        tcp = []
        if beside != "alone":
            tcp.append(site.popen("b", ["iperf3", "-s", "-1", "-B", HOSTS.addr_b], stdout=subprocess.DEVNULL))
            time.sleep(0.3)
            client = ["iperf3", "-c", HOSTS.addr_b, "-t", str(int(WARMUP + SECONDS + 3)), "-C", beside]
            tcp.append(site.popen("a", client, stdout=subprocess.DEVNULL))
            time.sleep(WARMUP)
        receiver = probe(site, "b", "spread", "7020", str(SECONDS + 1), stdout=subprocess.PIPE)
        try:
            assert receiver.stdout is not None and receiver.stdout.readline().strip() == "READY"
            sender = probe(site, "a", "pairs", HOSTS.addr_b, "7020", str(SECONDS), "0.004", stdout=subprocess.DEVNULL)
            sender.wait(timeout=SECONDS + 30)
            found = json.loads(receiver.communicate(timeout=30)[0])["gaps_us"]
        finally:
            for process in (receiver, *reversed(tcp)):
                reap(process, 0 if process is receiver else 30)
    return found


def row(mbit: int, beside: str, found: list[float]) -> dict:
    """What the gaps say: their quartiles, and the rate the median reads."""
    expected = PAIR_BYTES * 8 / mbit  # us
    q1, median, q3 = statistics.quantiles(found, n=4)
    return {
        "link_mbit": mbit,
        "beside": beside,
        "pairs": len(found),
        "expected_us": round(expected, 1),
        "q1_us": round(q1, 1),
        "median_us": round(median, 1),
        "q3_us": round(q3, 1),
        "read_mbit": round(PAIR_BYTES * 8 / median, 1),
        "within_20pct": round(sum(abs(g - expected) <= 0.2 * expected for g in found) / len(found), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spread", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 500], help="link rates (Mbit/s)")
    parser.add_argument("--beside", nargs="+", default=["alone", "cubic", "bbr"], help="alone, or TCP algorithms")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench.spread needs root (network namespaces, TUN devices)")
    console, rows = Console(), []
    points = [(mbit, beside) for mbit in args.rates for beside in args.beside]
    with Progress(console=console) as progress:
        task = progress.add_task("pairs", total=len(points))
        for mbit, beside in points:
            progress.update(task, description=f"pairs at {mbit} Mbit/s, {beside}")
            rows.append(row(mbit, beside, gaps(mbit, beside)))
            progress.advance(task)
    keys = list(rows[0])
    console.print(rich_table("A back-to-back pair's arrival gap (50 ms path)", keys, rows))
    lines = [
        "# A back-to-back pair's arrival gap through the emulator",
        "",
        f"`python -m bench.spread`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: pairs of 1,500-byte "
        f"packets every 4 ms for {SECONDS:.0f} s across a 50 ms path, timed by the receiver's kernel "
        "(SO_TIMESTAMPNS); `read_mbit` is the rate the median gap reads.",
        "",
        *md_table(keys, rows),
        "",
    ]
    out = Path(args.out) / "spread.md"
    out.write_text("\n".join(lines))
    console.log(f"wrote {out}")


if __name__ == "__main__":
    main()
