"""Side-by-side benchmarks: our engine against scp, rsync and iperf3.

    python -m bench.run            # everything (long: about an hour)
    python -m bench.run --quick    # a subset with smaller files (minutes)
    python -m bench.run --only wan --only sharing   # results-wan+sharing.*
    python -m bench.run --only wan --wan-point 200:1   # one WAN point (results-wan200-1.*)
    python -m bench.run --only fast --only costs        # 500 Mbit/s grid; per-datagram and per-byte CPU
    python -m bench.run --fast-point 200:0.01 --cap-kbps 1000000   # one 500 Mbit/s point, the engine capped at
                                                                   # twice the link (results-fast200-0.01-cap1000000.*)
    python -m bench.run --only setup   # round trips per setup step at 200 ms, then FIXED's ramp (bench/setup.py)

Every scenario runs its contenders interleaved (A B C A B C ...) and reports
medians, so a slow moment of this shared machine hurts all of them alike.
Peers live in network namespaces behind the WAN emulator (bench/wan.py),
the loopback scenario in one namespace.  Each run's bytes are verified
(size and sha256 of every file) before its time counts.  Results go to
docs/benchmarks/ as JSON, a Markdown table and PNG plots (bench/report.py).
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench import queue as queue_bench, report, setup
from bench.netns import Hosts, Loopback
from bench.peers import REPO, FaspServer, OpenSSH, Server, engine_available, reap, stolen_s, wait_measured
from bench.wan import IO_MODES, Wan

GIB = 1 << 30
LINK_MBIT = 100
LINK_KBPS = LINK_MBIT * 1000
FAST_MBIT = 500  # the "fast" grid: where a window sized per file, not from rate x RTT, stopped scaling
LOOPBACK_KBPS = 10_000_000  # the engine's target on loopback: far above what scp reaches (2.3-3.1 Gbit/s on the
# host of 2026-12-04, where a 2 Gbit/s target held the engine to 1.86 and so failed the wall-time goal)
COSTS_KBPS = 2_000_000  # the costs scenario's target: its fit needs the same rate at every datagram and file size
MGMT_PORT = 47001
IPERF_PORT = 5201
HOSTS = Hosts(*os.environ.get("FASP_BENCH_HOSTS", "fasp,10.77.0").split(",", 1))
"""Namespaces PREFIX-a/PREFIX-b on SUBNET.0/24 (loopback: PREFIX-lo); FASP_BENCH_HOSTS=PREFIX,SUBNET lets two benches
run side by side."""
LOOPBACK_NS = f"{HOSTS.prefix}-lo"


@dataclass(frozen=True)
class Profile:
    """How big and how long; --quick trades accuracy for minutes."""

    name: str
    reps: int
    loopback_bytes: int
    wan_bytes: int
    wan_timeout_s: float
    wan_points: tuple[tuple[int, float], ...]  # (RTT ms, loss %)
    fast_bytes: int
    fast_timeout_s: float
    fast_points: tuple[tuple[int, float], ...]  # (RTT ms, loss %) at FAST_MBIT
    costs_bytes: int
    small_files: int
    small_timeout_s: float
    share_s: float
    share_reps: int
    share_ccs: tuple[str, ...]  # TCP congestion controls the engine shares with, each in the same run
    control_reps: int
    iperf_s: float


FULL = Profile(
    "full",
    reps=3,
    loopback_bytes=GIB,
    wan_bytes=128 << 20,
    wan_timeout_s=40,
    wan_points=tuple((rtt, loss) for rtt in (0, 50, 200) for loss in (0, 1, 3)),
    fast_bytes=512 << 20,
    fast_timeout_s=60,
    fast_points=((0, 0), (200, 0), (200, 1), (200, 3)),
    costs_bytes=512 << 20,
    small_files=10_000,
    small_timeout_s=300,
    share_s=30,
    share_reps=3,
    share_ccs=("cubic", "bbr"),
    control_reps=3,
    iperf_s=10,
)
QUICK = Profile(
    "quick",
    reps=3,
    loopback_bytes=256 << 20,
    wan_bytes=32 << 20,
    wan_timeout_s=15,
    wan_points=((50, 0), (200, 1)),
    fast_bytes=128 << 20,
    fast_timeout_s=30,
    fast_points=((200, 0), (200, 1)),
    costs_bytes=128 << 20,
    small_files=2_000,
    small_timeout_s=120,
    share_s=15,
    share_reps=1,
    share_ccs=("cubic", "bbr"),
    control_reps=1,
    iperf_s=5,
)
SCENARIOS = ("ceiling", "loopback", "costs", "wan", "fast", "small", "sharing", "control", "queue", "setup")
COSTS_SIZES = (1400, 8192)  # -Z: two datagram sizes on loopback separate per-datagram from per-byte CPU
COSTS_SHARES = (8, 1)  # and two file sizes (costs_bytes / these) separate what a run costs whatever its size
SETUP_RTT_MS = 200
SETUP_REPS = 5
SPENT_FILES = 100
"""A destination holding this many files or more is set aside after its run and deleted when the bench ends,
not just before the next run: on this VM's ext4 (no journal) the inode allocator skips inodes freed in the last
minute, reading each one's inode block, so 10,000 files deleted just before a run made each file the next tool
created cost about 0.9 ms of kernel CPU (2,000 x 8 KiB over loopback: 4.4 s against 2.2 s in a directory with
no deletions nearby). Whichever tool ran after a deletion paid it; now none does. A few big files go at once."""
RAMP_REPS = 3
RAMP_BYTES = 32 << 20  # 2.7 s at the link's 100 Mbit/s: the ramp and a steady rate after it


# ----------------------------------------------------------------- data sets


class Dataset:
    """Random (incompressible) source files, made once and reused, with digests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._digests: dict[Path, str] = {}

    def big(self, size: int) -> Path:
        path = self.root / f"big-{size >> 20}MiB.bin"
        if not path.exists() or path.stat().st_size != size:
            with open(path, "wb") as out:
                for _ in range(size >> 20):
                    out.write(os.urandom(1 << 20))
        return path

    def small(self, count: int, size: int = 8 << 10) -> Path:
        path = self.root / f"small-{count}x{size >> 10}KiB"
        if not path.exists() or len(os.listdir(path)) != count:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            for i in range(count):
                (path / f"f{i:05d}.bin").write_bytes(os.urandom(size))
        return path

    def digest(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = sha256(path)
        return self._digests[path]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def files_of(source: Path) -> list[Path]:
    return [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def verify(dataset: Dataset, source: Path, dest: Path) -> bool:
    """Every source file arrived under ``dest``: same size, same sha256."""
    base = source.parent
    for path in files_of(source):
        arrived = dest / path.relative_to(base)
        if not arrived.is_file() or arrived.stat().st_size != path.stat().st_size:
            return False
        if sha256(arrived) != dataset.digest(path):
            return False
    return True


# --------------------------------------------------------------- the runner


@dataclass
class Contender:
    """One tool in a side-by-side comparison: its server on B, its client command on A."""

    name: str
    server: Server
    command: Callable[[Path], list[str]]  # source -> client argv
    env: dict[str, str]
    engine: bool = False


def _holds_many(root: Path) -> bool:
    """At least SPENT_FILES files under ``root``."""
    count = 0
    for _, _, files in os.walk(root):
        count += len(files)
        if count >= SPENT_FILES:
            return True
    return False


ENGINE_PACKAGES = ("fasp", "faspmanager")
"""Compiled to bytecode before any run. The engines run from this checkout, and where PYTHONDONTWRITEBYTECODE is
set (this machine sets it) every engine process compiled its modules again: 0.15-0.25 s of a client's CPU per
transfer (a one-file transfer took 0.44-0.66 s against rsync's 0.4, 0.33-0.49 s compiled)."""


@dataclass
class Bench:
    profile: Profile
    workdir: Path
    console: Console
    progress: Progress
    tcp_cc: str | None = None
    cap_kbps: int | None = None  # the engine's target in the grids; None: the link's rate (a user may set more)
    results: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data = Dataset(self.workdir / "data")
        self.dest = self.workdir / "dest"
        self.spent = self.workdir / "spent"  # destinations of many files, deleted at the end (SPENT_FILES)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.task = self.progress.add_task("starting", total=None)
        for package in ENGINE_PACKAGES:  # as an installed engine has it (pip compiles what it installs)
            compileall.compile_dir(os.path.join(REPO, package), quiet=1)

    def path(
        self,
        rate_mbit: float | None,
        rtt_ms: float = 0,
        loss_pct: float = 0,
        stats: Path | None = None,
        io: str = "offload",
    ) -> Wan:
        return Wan(
            rate_mbit,
            rtt_ms,
            loss_pct,
            hosts=HOSTS,
            tcp_cc=self.tcp_cc,
            stats_path=str(stats) if stats else None,
            io=io,
        )

    def say(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def step(self) -> None:
        self.progress.advance(self.task)

    def record(self, **row) -> dict:
        self.results.append(row)
        return row

    def contenders(self, site, tools: list[str], rate_kbps: int) -> list[Contender]:
        """The named tools, wired to servers on host B of ``site``.  Engine tools are
        ``engine-POLICY``, or ``engine-plain`` (FIXED without encryption), optionally with
        a datagram size (``engine-fixed-Z8192``)."""
        ssh, fasp = OpenSSH(site, self.workdir), FaspServer(site, self.workdir, self.dest)
        out = []
        for tool in tools:
            if tool == "scp":
                out.append(Contender(tool, ssh, lambda src: ssh.scp([src], self.dest), dict(os.environ)))
            elif tool == "rsync":
                out.append(Contender(tool, ssh, lambda src: ssh.rsync([src], self.dest), dict(os.environ)))
            else:
                kind, _, size = tool.removeprefix("engine-").partition("-Z")
                policy = "fixed" if kind == "plain" else kind
                encrypt = kind != "plain"
                out.append(
                    Contender(
                        tool,
                        fasp,
                        lambda src, p=policy, e=encrypt, z=int(size) if size else None: fasp.ascp(
                            [src], rate_kbps=rate_kbps, policy=p, encrypt=e, datagram_size=z
                        ),
                        fasp.client_env(),
                        engine=True,
                    )
                )
        return out

    def clear_dest(self) -> None:
        """An empty destination; the last run's many files set aside, not deleted (SPENT_FILES)."""
        if self.dest.exists():
            if _holds_many(self.dest):
                self.spent.mkdir(parents=True, exist_ok=True)
                self.dest.rename(self.spent / f"{time.monotonic_ns()}")
            else:
                shutil.rmtree(self.dest, ignore_errors=True)
        self.dest.mkdir(parents=True)

    def close(self) -> None:
        """Delete what the runs left."""
        shutil.rmtree(self.dest, ignore_errors=True)
        shutil.rmtree(self.spent, ignore_errors=True)

    def transfer(
        self, site, contender: Contender, source: Path, timeout_s: float, windows: list | None = None, **labels
    ) -> dict:
        """One measured run: fresh server, client on host A, bytes verified.
        ``windows`` (if given) gets (row, start, stop) in monotonic seconds."""
        self.clear_dest()
        argv = contender.command(source)
        server = contender.server
        server.start()
        log_path = self.logs / f"{contender.name}.log"
        try:
            with open(log_path, "ab") as log:
                log.write(f"\n=== {labels} {argv}\n".encode())
                log.flush()
                started, stolen = time.monotonic(), stolen_s()
                client = site.popen(
                    "a", argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=contender.env, cwd=REPO
                )
                finished = wait_measured(client, timeout_s, started)
                stolen = stolen_s() - stolen
        finally:
            served = server.stop()
        total = tree_bytes(source) if source.is_dir() else source.stat().st_size
        arrived = tree_bytes(self.dest)
        complete = finished.returncode == 0
        ok = complete and verify(self.data, source, self.dest)
        note = (
            ""
            if ok
            else (
                "time limit"
                if finished.returncode is None
                else f"exit {finished.returncode}"
                if not complete
                else "bytes differ"
            )
        )
        if not ok and finished.returncode not in (None, 0):
            note += ": " + log_path.read_text(errors="replace").strip().splitlines()[-1][-200:]
        row = self.record(
            **labels,
            tool=contender.name,
            bytes=arrived,
            total_bytes=total,
            seconds=round(finished.seconds, 3),
            mbit_s=round(arrived * 8 / finished.seconds / 1e6, 2),
            verified=ok,
            note=note,
            cpu_client_s=round(finished.cpu_s, 3),
            cpu_server_s=round(served.cpu_s, 3),
            cpu_s_per_gib=round((finished.cpu_s + served.cpu_s) / (arrived / GIB), 2) if arrived else None,
            rss_client_mib=finished.maxrss_mib,
            rss_server_mib=served.maxrss_mib,
            steal_s=round(stolen, 2),
        )
        if windows is not None:
            windows.append((row, started, started + finished.seconds))
        return row

    def side_by_side(
        self,
        site,
        tools: list[str],
        source: Path,
        timeout_s: float,
        rate_kbps: int,
        windows: list | None = None,
        **labels,
    ) -> None:
        """Interleaved reps of every tool; the engine only if it has landed."""
        contenders = self.contenders(site, tools, rate_kbps)
        have_engine = engine_available()
        for contender in contenders:
            if contender.engine and not have_engine:
                self.record(**labels, tool=contender.name, note="engine not available", verified=False)
        for rep in range(self.profile.reps):
            for contender in contenders:
                if contender.engine and not have_engine:
                    continue
                self.say(f"{labels} {contender.name} #{rep + 1}")
                row = self.transfer(site, contender, source, timeout_s, windows, rep=rep, **labels)
                self.console.log(
                    f"{labels} {contender.name}: {row['mbit_s']} Mbit/s {'ok' if row['verified'] else row['note']}"
                )
                self.step()

    def iperf(self, site, args: list[str], seconds: float, **labels) -> dict:
        """iperf3 from host A to B; the receiver's view of the rate. A run whose report lacks the receiver's side
        (iperf3 3.12 now and then loses the server's results over a lossy path: the full run of 2026-12-03 died
        on it at 50 ms, 1 %) is run once more."""
        for attempt in (1, 2):
            server = site.popen(
                "b",
                ["iperf3", "-s", "-1", "-B", site.hosts.addr_b],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            received = None
            try:
                time.sleep(0.3)
                out = site.run(
                    "a",
                    ["iperf3", "-c", site.hosts.addr_b, "-t", str(seconds), "-J", *args],
                    capture_output=True,
                    text=True,
                    timeout=seconds + 30,
                )
                report = json.loads(out.stdout)
                received = report.get("end", {}).get("sum_received")
            finally:
                # the one-off server (-1) ends once it has sent its results; one the client never reached, or
                # whose results did not arrive, waits for another client: it is killed at once, not given 10 s
                reap(server, 10 if received is not None else 0)
            if received is not None:
                break
            self.console.log(
                f"iperf3 {labels}: no receiver report ({report.get('error', 'no error given')}), try {attempt}"
            )
        else:
            raise RuntimeError(f"iperf3 gave no receiver report twice: {report.get('error', 'no error given')}")
        row = dict(
            **labels,
            tool="iperf3-udp" if "-u" in args else "iperf3-tcp",
            mbit_s=round(received["bits_per_second"] / 1e6, 2),
            seconds=received["seconds"],
        )
        if "-u" in args:
            row["packets_per_s"] = round(
                received["packets"] * (1 - received["lost_percent"] / 100) / received["seconds"]
            )
            row["lost_percent"] = round(received["lost_percent"], 2)
        return self.record(**row)

    # ------------------------------------------------------------ scenarios

    def gso_blast(self, site, mbit: float, seconds: float, **labels) -> dict:
        """Numbered datagrams from A to B the way the engine moves them (UDP GSO
        out, GRO in, bench/probe.py); the receiver's count of intact ones."""
        probe = [sys.executable, "-m", "bench.probe"]
        counter = site.popen("b", [*probe, "count", "7100"], stdout=subprocess.PIPE, text=True, cwd=REPO)
        try:
            if counter.stdout.readline().strip() != "READY":
                raise RuntimeError("UDP counter did not start")
            sent = json.loads(
                site.run(
                    "a",
                    [*probe, "blast", site.hosts.addr_b, "7100", str(mbit), str(seconds)],
                    capture_output=True,
                    text=True,
                    timeout=seconds + 30,
                    cwd=REPO,
                ).stdout
            )
            got = json.loads(counter.communicate(timeout=30)[0])
        finally:
            reap(counter, 10)
        return self.record(
            **labels,
            tool="udp-gso",
            mbit_s=round(got["received"] * sent["size"] * 8 / max(got["seconds"], 1e-9) / 1e6, 2),
            seconds=round(got["seconds"], 3),
            packets_per_s=round(got["received"] / max(got["seconds"], 1e-9)),
            lost_percent=round(100 * (1 - got["received"] / sent["sent"]), 2),
            damaged=got["damaged"],
            most_per_read=got["most_per_read"],
        )

    def ceiling(self) -> None:
        """The emulator's own limit, no impairment, with each TUN I/O mode in the
        same run: iperf3 UDP (one datagram per system call), datagrams in UDP GSO
        buffers as the engine sends them, and iperf3 TCP; with the emulator's CPU
        seconds per second of each measurement."""
        for io in IO_MODES:
            with self.path(None, io=io) as site:
                for offered in ("500M", "600M", "1G"):
                    self.metered(site, io, f"iperf3 UDP {offered}", self.iperf, ["-u", "-b", offered, "-l", "1400"])
                for mbit in (500, 1000):
                    self.metered(site, io, f"UDP GSO {mbit}M", self.gso_blast, mbit, offered=f"{mbit}M")
                self.metered(site, io, "iperf3 TCP", self.iperf, [], offered="tcp")

    def metered(self, site, io: str, what: str, measure: Callable[..., dict], arg, offered: str | None = None) -> None:
        """One ceiling measurement, with the emulator's CPU seconds per second during it."""
        self.say(f"ceiling ({io}): {what}")
        cpu, wall = site.cpu_seconds(), time.monotonic()
        row = measure(site, arg, self.profile.iperf_s, scenario="ceiling", offered=offered or what.split()[-1], io=io)
        row["emulator_cpu"] = round((site.cpu_seconds() - cpu) / (time.monotonic() - wall), 2)
        self.console.log(
            f"ceiling ({io}) {what}: {row['mbit_s']} Mbit/s, lost {row.get('lost_percent', '-')} %, "
            f"emulator CPU {row['emulator_cpu']} s/s"
        )
        self.step()

    def loopback(self) -> None:
        source = self.data.big(self.profile.loopback_bytes)
        with Loopback(LOOPBACK_NS, self.tcp_cc) as site:
            self.side_by_side(
                site,
                ["engine-fixed", "engine-plain", "scp", "rsync"],
                source,
                timeout_s=600,
                rate_kbps=LOOPBACK_KBPS,
                scenario="loopback",
            )

    def costs(self) -> None:
        """Loopback at two datagram sizes and two file sizes, encrypted and not: per-run, per-datagram and
        per-byte CPU (report.cost_fit)."""
        tools = [f"engine-{kind}-Z{size}" for kind in ("fixed", "plain") for size in COSTS_SIZES]
        with Loopback(LOOPBACK_NS, self.tcp_cc) as site:
            for share in COSTS_SHARES:
                source = self.data.big(self.profile.costs_bytes // share)
                self.side_by_side(site, tools, source, timeout_s=600, rate_kbps=COSTS_KBPS, scenario="costs")

    def wan(self) -> None:
        tools = ["engine-fixed", "engine-fair", "scp", "rsync"]
        self.grid("wan", LINK_MBIT, self.profile.wan_points, self.profile.wan_bytes, self.profile.wan_timeout_s, tools)

    def fast(self) -> None:
        """The same measurements at FAST_MBIT with a larger file: the window must follow rate x RTT."""
        p = self.profile
        self.grid(
            "fast", FAST_MBIT, p.fast_points, p.fast_bytes, p.fast_timeout_s, ["engine-fixed", "engine-fair", "scp"]
        )

    def grid(
        self,
        scenario: str,
        link_mbit: int,
        points: tuple[tuple[int, float], ...],
        size: int,
        timeout_s: float,
        tools: list[str],
    ) -> None:
        """Each (RTT, loss) point: iperf3 UDP at the link rate (what the emulator carries there), then the tools
        interleaved, each run's data phase from the emulator's meter."""
        source = self.data.big(size)
        for rtt, loss in points:
            labels = dict(scenario=scenario, rtt_ms=rtt, loss_pct=loss, link_mbit=link_mbit)
            stats = self.workdir / f"{scenario}-{rtt}-{loss}-stats.jsonl"
            windows: list = []
            with self.path(link_mbit, rtt, loss, stats) as site:
                self.say(f"{labels} iperf3 UDP")
                row = self.iperf(site, ["-u", "-b", f"{link_mbit}M", "-l", "1400"], self.profile.iperf_s, **labels)
                self.console.log(f"{labels} iperf3 UDP: {row['mbit_s']} Mbit/s")
                self.step()
                self.side_by_side(site, tools, source, timeout_s, self.cap_kbps or link_mbit * 1000, windows, **labels)
                t0 = site.t0
            self.data_phases(stats, t0, windows, labels)

    def data_phases(self, stats: Path, t0: float, windows: list, labels: dict) -> None:
        """Each run's data phase from the emulator's meter (read once the emulator has flushed its last bins)."""
        delivered, sent = report.read_bins(stats), report.read_bins(stats, "ab-sent")
        for row, start, stop in windows:
            row.update(
                report.data_phase(delivered, sent, start - t0, stop - t0, report.tool_flows(row["tool"]), row["bytes"])
            )
            self.console.log(
                f"{labels} {row['tool']} #{row['rep'] + 1}: whole run {row['mbit_s']}, "
                f"data phase {row['data_mbit_s']} Mbit/s over {row['data_s']} s, "
                f"sent/file {row['sent_per_file']}, host steal {row['steal_s']} s"
            )

    def small(self) -> None:
        """Many small files, each run's data phase from the emulator's meter: the whole-run time less the data
        phase is what setup and the tail cost, apart from what the wire costs."""
        source = self.data.small(self.profile.small_files)
        stats = self.workdir / "small-stats.jsonl"
        windows: list = []
        with self.path(LINK_MBIT, stats=stats) as site:
            self.side_by_side(
                site,
                ["engine-fixed", "scp", "rsync"],
                source,
                self.profile.small_timeout_s,
                LINK_KBPS,
                windows,
                scenario="small",
                files=self.profile.small_files,
            )
            t0 = site.t0
        self.data_phases(stats, t0, windows, {"scenario": "small"})

    def setup(self) -> None:
        """Round trips from TCP connect to the first piece request, per step: one small file at 200 ms and 0 ms."""
        if not engine_available():
            self.record(scenario="setup", tool="engine", note="engine not available")
            return
        source = self.data.small(1)
        runs: dict[int, list[dict[str, float]]] = {0: [], SETUP_RTT_MS: []}
        for rep in range(max(self.profile.reps, SETUP_REPS)):  # short runs: more of them, the least counts
            for rtt_ms, found in runs.items():
                with self.path(LINK_MBIT, rtt_ms) as site:
                    self.say(f"setup at {rtt_ms} ms #{rep + 1}")
                    fasp = FaspServer(site, self.workdir, self.dest, login="password")
                    row = self.transfer(
                        site,
                        Contender(
                            "engine-fixed",
                            fasp,
                            lambda src, f=fasp: f.ascp([src], rate_kbps=LINK_KBPS, policy="fixed", debug=True),
                            fasp.client_env(),
                            engine=True,
                        ),
                        source,
                        60,
                        scenario="setup-run",
                        rtt_ms=rtt_ms,
                        rep=rep,
                    )
                    log = (self.logs / "engine-fixed.log").read_text(errors="replace")
                    found.append(setup.marks(log.rsplit("\n=== ", 1)[-1]))
                    outcome = "ok" if row["verified"] else row["note"]
                    self.console.log(f"setup at {rtt_ms} ms #{rep + 1}: {found[-1]} {outcome}")
                    self.step()
        for step in setup.round_trips(runs[SETUP_RTT_MS], runs[0], SETUP_RTT_MS):
            self.console.log(f"setup {step}")
            self.record(scenario="setup", tool="engine-fixed", rtt_ms=SETUP_RTT_MS, **step)
        self.ramp()

    def ramp(self) -> None:
        """FIXED's ramp after setup: a file big enough to last RAMP_RTTS round trips at the target, at 200 ms,
        each run on a fresh path so the emulator's bins are its alone; the median run counts."""
        source = self.data.big(RAMP_BYTES)
        found = []
        for rep in range(RAMP_REPS):
            stats = self.workdir / f"ramp-{rep}-stats.jsonl"
            with self.path(LINK_MBIT, SETUP_RTT_MS, 0, stats) as site:
                self.say(f"ramp at {SETUP_RTT_MS} ms #{rep + 1}")
                fasp = FaspServer(site, self.workdir, self.dest)
                contender = Contender(
                    "engine-fixed",
                    fasp,
                    lambda src, f=fasp: f.ascp([src], rate_kbps=LINK_KBPS, policy="fixed"),
                    fasp.client_env(),
                    engine=True,
                )
                row = self.transfer(site, contender, source, 60, scenario="ramp-run", rtt_ms=SETUP_RTT_MS, rep=rep)
            reached = setup.ramp(report.read_bins(stats), LINK_KBPS, SETUP_RTT_MS) if row["verified"] else None
            self.console.log(f"ramp at {SETUP_RTT_MS} ms #{rep + 1}: {reached} {row['note'] or 'ok'}")
            if reached is not None:
                found.append(reached)
            self.step()
        if found:
            median = sorted(found, key=lambda r: r["round_trips"])[len(found) // 2]
            self.record(scenario="setup", tool="engine-fixed", rtt_ms=SETUP_RTT_MS, ramp=median, ramp_runs=found)

    def sharing(self) -> None:
        """Engine and one TCP flow through a 100 Mbit/s, 50 ms bottleneck, once per TCP congestion control."""
        if not engine_available():
            self.record(scenario="sharing", tool="engine", note="engine not available")
            return
        source = self.data.big(self.profile.loopback_bytes)
        for cc in (self.tcp_cc,) if self.tcp_cc else self.profile.share_ccs:  # stats per algorithm: bins restart
            stats = self.workdir / f"sharing-{cc}-stats.jsonl"
            windows = []
            with self.path(LINK_MBIT, 50, 0, stats) as site:
                fasp = FaspServer(site, self.workdir, self.dest)
                for rep in range(self.profile.share_reps):
                    for policy in ("fair", "high", "low"):
                        self.say(f"sharing: {policy} vs TCP {cc} #{rep + 1}")
                        windows.append(self.share_once(site, fasp, source, policy, rep, cc))
                        self.step()
                t0 = site.t0
            bins = report.read_bins(stats)
            for window in windows:
                window.update(report.share(bins, window.pop("start") - t0, window.pop("stop") - t0), tcp_cc=cc)
                self.record(**window)
                self.console.log(
                    f"sharing {window['policy']} vs {cc}: engine {window['engine_mbit_s']} Mbit/s, "
                    f"TCP {window['tcp_mbit_s']} Mbit/s, engine share {window['engine_share']}"
                )

    def share_once(self, site, fasp: FaspServer, source: Path, policy: str, rep: int, tcp_cc: str) -> dict:
        """One engine run beside one iperf3 TCP flow using ``tcp_cc`` (set per socket with iperf3's -C, which root
        may do for any available algorithm, whatever the host allows namespaces to choose by default)."""
        warmup, share_s = 5.0, self.profile.share_s
        server = site.popen(
            "b", ["iperf3", "-s", "-1", "-B", site.hosts.addr_b], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(0.3)
        tcp = site.popen(
            "a",
            ["iperf3", "-c", site.hosts.addr_b, "-t", str(int(warmup + share_s + 3)), "-C", tcp_cc],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.clear_dest()
        fasp.start()
        try:
            time.sleep(warmup)
            with open(self.logs / "sharing.log", "ab") as log:
                start = time.monotonic()
                engine = site.popen(
                    "a",
                    fasp.ascp([source], rate_kbps=LINK_KBPS, policy=policy),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=fasp.client_env(),
                )
                finished = wait_measured(engine, share_s, start)
                stop = start + min(finished.seconds, share_s)
        finally:
            fasp.stop()
            for process in (tcp, server):
                reap(process, warmup + 15)
        return dict(scenario="sharing", policy=policy, rep=rep, start=start, stop=stop, engine_exit=finished.returncode)

    def queue(self) -> None:
        """Many small orders through the queue (bench/queue.py): cold engines then warm, password then key
        logins, in this one run."""
        transfers = 200 if self.profile.name == "full" else 60
        for auth in ("password", "key"):
            for warm in (False, True):
                self.say(f"queue: {transfers} orders, {auth}, {'warm' if warm else 'cold'}")
                row = queue_bench.run(transfers, 2, 4, warm, self.workdir / "queue", auth)
                self.record(**row)
                self.console.log(queue_bench.table([row]).splitlines()[-1])
                self.step()

    def control(self) -> None:
        """RATE takes effect how fast, and how steady is FIXED."""
        if not engine_available():
            self.record(scenario="control", tool="engine", note="engine not available")
            return
        source = self.data.big(self.profile.loopback_bytes)
        stats = self.workdir / "control-stats.jsonl"
        runs = []
        first, second, change_at, run_s = 50_000, 20_000, 6.0, 10.0
        with self.path(LINK_MBIT, 50, 0, stats) as site:
            fasp = FaspServer(site, self.workdir, self.dest)
            for rep in range(self.profile.control_reps):
                self.say(f"control: FIXED {first} -> RATE {second} #{rep + 1}")
                events = self.workdir / f"control-events-{rep}.jsonl"
                steer = site.popen(
                    "a",
                    [
                        sys.executable,
                        "-m",
                        "bench.steer",
                        str(MGMT_PORT),
                        str(events),
                        "--rate-at",
                        f"{change_at}:{second}",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=REPO,
                    env=fasp.client_env(),
                )
                if steer.stdout.readline().strip() != "READY":
                    raise RuntimeError("management listener (bench.steer) did not start")
                self.clear_dest()
                fasp.start()
                try:
                    with open(self.logs / "control.log", "ab") as log:
                        start = time.monotonic()
                        engine = site.popen(
                            "a",
                            fasp.ascp([source], rate_kbps=first, policy="fixed", mgmt_port=MGMT_PORT),
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=log,
                            env=fasp.client_env(),
                        )
                        wait_measured(engine, run_s + 3, start)
                finally:
                    fasp.stop()
                    reap(steer, 0)
                    steer.stdout.close()
                runs.append((rep, events))
                self.step()
            t0 = site.t0
        bins = report.read_bins(stats)
        for rep, events in runs:
            row = report.control(bins, t0, report.read_events(events), first, second)
            self.console.log(
                f"control #{rep + 1}: "
                + ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("wire", "stats_rates"))
            )
            self.record(scenario="control", rep=rep, rate_kbps=first, new_rate_kbps=second, **row)


def wan_point(text: str) -> tuple[int, float]:
    """Parse "200:1" into (200, 1): RTT in ms, loss in % (whole numbers stay ints, as in the grid)."""
    try:
        rtt, loss = text.split(":")
        values = [float(rtt), float(loss)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RTT_MS:LOSS_PCT, e.g. 200:1, not {text!r}") from None
    rtt_ms, loss_pct = (int(v) if v.is_integer() else v for v in values)
    return rtt_ms, loss_pct


def chosen(args: argparse.Namespace) -> tuple[Profile, str, list[str] | None]:
    """The profile as the command line changes it (grid points, WAN file size), the results' file stem (the profile,
    or the chosen points, or the --only scenarios), and the scenarios to run: the grids whose points were chosen,
    unless --only names others."""
    profile = QUICK if args.quick else FULL
    stem = profile.name
    points = {"wan": args.wan_point, "fast": args.fast_point}
    grids = [grid for grid, chosen_points in points.items() if chosen_points]
    for grid in grids:
        profile = replace(profile, **{f"{grid}_points": tuple(points[grid])})
    if grids or args.only:  # a part of the run is named after its part: it must not replace results-full.*
        parts = [grid + "+".join(f"{r}-{loss}" for r, loss in points[grid]) for grid in grids] or args.only
        stem = ("quick-" if args.quick else "") + "+".join(parts)
    if args.wan_mib:
        profile = replace(profile, wan_bytes=args.wan_mib << 20)
        stem += f"-{args.wan_mib}MiB"
    return profile, stem, args.only or grids or None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller files, fewer points")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only these (repeatable); results-SCENARIO+....*"
    )
    parser.add_argument("--workdir", default="/tmp/fasp-bench", help="data sets, logs, scratch (reused)")
    parser.add_argument(
        "--tcp-cc",
        default=None,
        help="TCP congestion control of both hosts (default: the machine's, recorded in the results)",
    )
    parser.add_argument(
        "--wan-point",
        action="append",
        type=wan_point,
        metavar="RTT:LOSS",
        help="WAN grid point(s) to run instead of the profile's, e.g. 200:1 (ms : %%); "
        "implies --only wan unless --only is given; results-wanRTT-LOSS.*",
    )
    parser.add_argument(
        "--fast-point",
        action="append",
        type=wan_point,
        metavar="RTT:LOSS",
        help="500 Mbit/s grid point(s) to run instead of the profile's; implies --only fast unless --only is given; "
        "results-fastRTT-LOSS.*",
    )
    parser.add_argument("--wan-mib", type=int, default=None, help="WAN file size in MiB (default: the profile's)")
    parser.add_argument(
        "--cap-kbps",
        type=int,
        default=None,
        help="the engine's target rate (-l) in the wan and fast grids (default: the link's rate); results-...-capN.*",
    )
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench.run needs root (network namespaces, TUN devices, sshd)")
    profile, stem, args.only = chosen(args)
    workdir = Path(args.workdir)
    console = Console()
    started = time.time()
    commit = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()  # the code that ran
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} runs"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bench = Bench(profile, workdir, console, progress, args.tcp_cc, args.cap_kbps)
        failed = False
        try:
            for name in args.only or SCENARIOS:
                getattr(bench, name)()
        except KeyboardInterrupt:
            console.log("interrupted: writing what was measured")
        except Exception:  # a scenario that fails must not take the others' figures with it
            console.print_exception()
            console.log("a scenario failed: writing what was measured")
            failed = True
        finally:
            bench.close()
    meta = {
        "profile": profile.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started),
        "engine_available": engine_available(),
        "git": commit,
        "cpus": os.cpu_count(),
        "link_mbit": LINK_MBIT,
        "fast_mbit": FAST_MBIT,
        "fast_mib": profile.fast_bytes >> 20,
        "wan_mib": profile.wan_bytes >> 20,
        "engine_login": "the engine logs in with the ed25519 key scp and rsync use (the same key file, the same "
        "conditions); the setup scenario by password",
        "tcp_cc": args.tcp_cc or Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip(),
        "cap_kbps": args.cap_kbps,
    }
    stem += f"-{args.tcp_cc}" if args.tcp_cc else ""  # a chosen TCP gets its own files
    stem += f"-cap{args.cap_kbps}" if args.cap_kbps else ""  # and so does a chosen cap
    paths = report.write(Path(args.out), stem, meta, bench.results)
    for path in paths:
        console.log(f"wrote {path}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
