"""Turn benchmark measurements into numbers, a Markdown table, JSON and plots.

The analysis functions are pure (rows and bins in, numbers out) so they can
be checked without a network; :func:`write` is the only part that touches
files.  Throughput shares come from the emulator's per-flow counters, never
from a tool's own report.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from rich.table import Table

from bench.queue import table as queue_table

BIN_S = 0.1


# ------------------------------------------------------------------ inputs


def read_bins(path: Path, direction: str = "ab") -> list[dict]:
    """The emulator's per-flow bins of one direction: "ab" delivered from host A
    to B (the default), "ba" the other way, "ab-sent" offered by A to the path."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [row for row in rows if row.get("dir") == direction]


def read_events(path: Path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def engine_bytes(flows: dict[str, int]) -> int:
    """A bin's bytes of the engine's data (UDP)."""
    return sum(n for key, n in flows.items() if key.startswith("udp:"))


def _tcp_bytes(flows: dict[str, int], port: int = 5201) -> int:
    return sum(n for key, n in flows.items() if key.startswith("tcp:") and str(port) in key.split(":")[1].split(">"))


def tool_flows(tool: str):
    """What a WAN contender's bytes look like in the meter: the engine's UDP data
    and its TCP session on port 33001; scp and rsync, their SSH connection (port 22)."""
    if tool.startswith("engine"):
        return lambda flows: sum(
            n
            for key, n in flows.items()
            if key.startswith("udp:") or (key.startswith("tcp:") and _has_port(key, 33001))
        )
    return lambda flows: sum(n for key, n in flows.items() if key.startswith("tcp:") and _has_port(key, 22))


def _has_port(key: str, port: int) -> bool:
    return str(port) in key.split(":", 1)[1].split(">")


def series(bins: list[dict], start: float, stop: float, pick, step_s: float = 1.0) -> list[tuple[float, float]]:
    """(seconds since ``start``, Mbit/s) in steps of ``step_s`` of what ``pick(flows)`` counts."""
    buckets: dict[int, int] = defaultdict(int)
    for row in bins:
        if start <= row["t"] < stop:
            buckets[int((row["t"] - start) / step_s + 1e-6)] += pick(row["bytes"])  # bins sit on the grid
    count = int((stop - start) / step_s)
    return [(round(i * step_s, 3), round(buckets[i] * 8 / step_s / 1e6, 3)) for i in range(count)]


def md_table(keys: list[str], rows: list[dict]) -> list[str]:
    """Markdown lines of ``rows``, one column per key (a standalone bench's result file)."""
    return [
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
        *("| " + " | ".join(str(row[key]) for key in keys) + " |" for row in rows),
    ]


def rich_table(title: str, keys: list[str], rows: list[dict]) -> Table:
    """The same rows for the console."""
    table = Table(title=title)
    for key in keys:
        table.add_column(key)
    for row in rows:
        table.add_row(*(str(row[key]) for key in keys))
    return table


# ---------------------------------------------------------------- analyses


def share(bins: list[dict], start: float, stop: float) -> dict:
    """How the engine (UDP) and the iperf3 TCP flow shared the path, from the
    engine's first data byte (session setup excluded) until ``stop``."""
    sending = [row["t"] for row in bins if start <= row["t"] < stop and engine_bytes(row["bytes"])]
    start = sending[0] if sending else start
    window = [row for row in bins if start <= row["t"] < stop]
    engine = sum(engine_bytes(row["bytes"]) for row in window)
    tcp = sum(_tcp_bytes(row["bytes"]) for row in window)
    seconds = max(stop - start, BIN_S)
    return {
        "seconds": round(seconds, 2),
        "engine_mbit_s": round(engine * 8 / seconds / 1e6, 2),
        "tcp_mbit_s": round(tcp * 8 / seconds / 1e6, 2),
        "engine_share": round(engine / (engine + tcp), 3) if engine + tcp else None,
        "series": {"engine": series(bins, start, stop, engine_bytes), "tcp": series(bins, start, stop, _tcp_bytes)},
    }


DATA_BIN_BYTES = 5000  # a 100 ms bin "carries data" from this many bytes (0.4 Mbit/s) on


def data_phase(delivered: list[dict], sent: list[dict], start: float, stop: float, pick, file_bytes: int) -> dict:
    """One run's data phase, from the emulator's bins (times in seconds since its start).

    The run lasted from ``start`` to ``stop``; ``pick(flows)`` counts its tool's
    bytes in a bin.  The data phase runs from the first to the last bin (both
    included) in which at least DATA_BIN_BYTES of the tool were delivered A->B:
    SSH and session setup exchange only a few small packets per round trip, TCP's
    first flight is 10 full segments.  Stalls inside the phase count against it.
    Goodput is the file bytes that arrived over the phase; ``wire_mbit_s`` is
    what crossed the bottleneck in it (headers, retransmissions and the
    session's own messages included).  The byte ratios cover the whole run:
    sent (offered to the path, lost packets included) and delivered, over file bytes.
    """

    def window(bins: list[dict]) -> list[dict]:
        return [row for row in bins if start - BIN_S < row["t"] < stop]  # bins that overlap the run

    counted = [(row["t"], pick(row["bytes"])) for row in window(delivered)]
    data = [t for t, n in counted if n >= DATA_BIN_BYTES]
    out: dict = {
        "sent_per_file": round(sum(pick(row["bytes"]) for row in window(sent)) / file_bytes, 4)
        if file_bytes and sent
        else None,
        "delivered_per_file": round(sum(n for _, n in counted) / file_bytes, 4) if file_bytes else None,
    }
    if not data:
        return {**out, "data_s": None, "data_mbit_s": None, "wire_mbit_s": None}
    first, last = data[0], data[-1]
    seconds = round(last - first + BIN_S, 3)
    wire = sum(n for t, n in counted if first <= t <= last)
    return {
        **out,
        "data_s": seconds,
        "data_mbit_s": round(file_bytes * 8 / seconds / 1e6, 2),
        "wire_mbit_s": round(wire * 8 / seconds / 1e6, 2),
    }


def control(bins: list[dict], t0: float, events: list[dict], first_kbps: int, second_kbps: int) -> dict:
    """RATE latency (from STATS and from the wire) and FIXED steadiness.

    The wire rate includes headers, so steadiness is judged against the
    rate's own mean and, separately, the mean against the target.
    """
    if not events:
        return {"note": "engine sent no management events"}
    start = events[0]["t"] - t0
    sent = [e for e in events if e.get("sent") == "RATE"]
    stats = [e for e in events if e.get("type") == "STATS" and e.get("Rate")]
    stop = events[-1]["t"] - t0
    out: dict = {
        "stats_rates": [(round(e["t"] - t0 - start, 3), int(e["Rate"])) for e in stats],
        "wire": series(bins, start, stop + 1, engine_bytes, BIN_S),
    }
    change = sent[0]["t"] - t0 if sent else stop
    steady = [rate for t, rate in series(bins, start + 2, change, engine_bytes) if t < change - start - 2]
    if steady:
        mean = statistics.mean(steady)
        out.update(
            fixed_mean_mbit_s=round(mean, 2),
            fixed_mean_vs_target=round(mean * 1000 / first_kbps, 3),
            fixed_max_dev_pct=round(max(abs(r - mean) for r in steady) / mean * 100, 2) if mean else None,
            fixed_cv_pct=round(statistics.pstdev(steady) / mean * 100, 2) if mean else None,
        )
    if not sent:
        return {**out, "note": "no RATE sent (engine ended before the change)"}
    target = second_kbps / 1000
    after_stats = [
        e["t"] - t0 - change
        for e in stats
        if e["t"] - t0 > change and abs(int(e["Rate"]) - second_kbps) <= 0.05 * second_kbps
    ]
    out["rate_effective_stats_s"] = round(after_stats[0], 3) if after_stats else None
    # on the wire: first 100 ms bin after the command from which a 500 ms average stays within 10 %
    wire = [(t + start - change, r) for t, r in out["wire"] if t + start >= change]
    scale = out.get("fixed_mean_vs_target") or 1.0  # header overhead seen in the FIXED phase
    for i in range(len(wire) - 5):
        if abs(statistics.mean(r for _, r in wire[i : i + 5]) - target * scale) <= 0.1 * target * scale:
            out["rate_effective_wire_s"] = round(max(wire[i][0], 0.0), 3)  # as the far end sees it
            break
    else:
        out["rate_effective_wire_s"] = None
    return out


def median(rows: list[dict], key: str, digits: int = 2):
    values = [row[key] for row in rows if row.get(key) is not None]
    return round(statistics.median(values), digits) if values else None


def group(results: list[dict], scenario: str, *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in results:
        if row.get("scenario") == scenario:
            groups[tuple(row.get(k) for k in keys)].append(row)
    return groups


def _fmt(value, unit: str = "") -> str:
    return "–" if value is None else f"{value}{unit}"


def _cell(rows: list[dict]) -> str:
    """Median Mbit/s of verified runs; partial runs (time limit) marked."""
    if any(r.get("note") == "engine not available" for r in rows):
        return "engine n/a"
    if not rows:
        return "–"
    ok = [r for r in rows if r.get("verified", True)]  # iperf3 rows have nothing to verify
    value = median(ok or rows, "mbit_s")
    return f"{value}" if len(ok) == len(rows) else f"{value} ({len(rows) - len(ok)}/{len(rows)} incomplete)"


# ---------------------------------------------------------------- outputs


def markdown(meta: dict, results: list[dict]) -> str:
    lines = [
        f"# Benchmark results ({meta['profile']} profile)",
        "",
        f"Run {meta['started']} at commit `{meta['git']}`, {meta['seconds']} s, {meta['cpus']} CPUs "
        f"(shared), TCP congestion control {meta.get('tcp_cc')}. "
        f"Engine available: {'yes' if meta['engine_available'] else 'no'}. Throughput is payload "
        "Mbit/s, median of the repetitions; a run counts only if every byte arrived (size and sha256).",
        "",
    ]
    if meta.get("engine_login"):
        lines += [f"Logins: {meta['engine_login']}", ""]
    if meta.get("cap_kbps"):
        lines += [f"The engine's target rate in the grids: {meta['cap_kbps']} kbit/s, not the link's rate.", ""]
    ceiling = group(results, "ceiling", "io", "tool", "offered")
    if ceiling:
        lines += [
            "## Emulator ceiling (no impairment, across the emulator; each TUN I/O mode in the same run)",
            "",
            "`offload`: UDP GSO buffers cross the TUN devices whole (bench/tunframe.py); `plain`: one system "
            "call per packet. `udp-gso` sends datagrams as the engine does (GSO out, GRO in).",
            "",
            "| TUN I/O | tool | offered | received Mbit/s | packets/s | lost % | emulator CPU s/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for (io, tool, offered), rows in ceiling.items():
            r = rows[0]
            lines.append(
                f"| {io or 'plain'} | {tool} | {offered} | {r['mbit_s']} | {_fmt(r.get('packets_per_s'))} "
                f"| {_fmt(r.get('lost_percent'))} | {_fmt(r.get('emulator_cpu'))} |"
            )
        lines.append("")
    loop = group(results, "loopback", "tool")
    if loop:
        lines += [
            "## Loopback, one large file",
            "",
            "| tool | Mbit/s | seconds | CPU s per GiB (client + server) | peak RSS MiB client / server | runs |",
            "|---|---|---|---|---|---|",
        ]
        for (tool,), rows in loop.items():
            ok = [r for r in rows if r.get("verified")]
            lines.append(
                f"| {tool} | {_cell(rows)} | {_fmt(median(ok, 'seconds'))} | "
                f"{_fmt(median(ok, 'cpu_s_per_gib'))} | {_fmt(median(ok, 'rss_client_mib'))} / "
                f"{_fmt(median(ok, 'rss_server_mib'))} | {len(ok)}/{len(rows)} ok |"
            )
        lines.append("")
    lines += costs_section(results)
    for scenario, link, mib in (
        ("wan", meta["link_mbit"], meta.get("wan_mib")),
        ("fast", meta.get("fast_mbit"), meta.get("fast_mib")),
    ):
        wan = group(results, scenario, "rtt_ms", "loss_pct", "tool")
        if not wan:
            continue
        tools = list(dict.fromkeys(t for (_, _, t) in wan))
        points = list(dict.fromkeys((rtt, loss) for (rtt, loss, _) in wan))
        size = f", {mib} MiB file" if mib else ""
        lines += [
            f"## WAN grid: {link} Mbit/s bottleneck, queue one BDP{size}",
            "",
            "| RTT ms | loss % | " + " | ".join(tools) + " |",
            "|---|---|" + "---|" * len(tools),
        ]
        for rtt, loss in points:
            lines.append(f"| {rtt} | {loss} | " + " | ".join(_cell(wan.get((rtt, loss, t), [])) for t in tools) + " |")
        lines.append("")
        lines += wan_data_phase(wan)
        lines += memory_section(wan, link)
    small = group(results, "small", "tool")
    if small:
        files = next(iter(small.values()))[0].get("files")
        lines += [
            f"## Many small files: {files} files of 8 KiB, {meta['link_mbit']} Mbit/s, no added delay",
            "",
            "Data phase and link bytes from the emulator's meter (as in the WAN grid): the whole run less the data",
            "phase is setup and tail; link bytes per file byte count every header, message and resent datagram the",
            "bottleneck carried from A to B.",
            "",
            "| tool | seconds | files/s | data phase s | link bytes per file byte | runs |",
            "|---|---|---|---|---|---|",
        ]
        for (tool,), rows in small.items():
            ok = [r for r in rows if r.get("verified")]
            secs = median(ok, "seconds")
            lines.append(
                f"| {tool} | {_fmt(secs) if ok else _cell(rows)} | "
                f"{_fmt(round(files / secs) if secs else None)} | {_fmt(median(ok, 'data_s'))} | "
                f"{_fmt(median(ok, 'delivered_per_file', 4))} | {len(ok)}/{len(rows)} ok |"
            )
        lines.append("")
    sharing = group(results, "sharing", "tcp_cc", "policy")
    if sharing:
        lines += [
            f"## Sharing {meta['link_mbit']} Mbit/s, 50 ms with one TCP flow (iperf3)",
            "",
            "| TCP | policy | engine Mbit/s | TCP Mbit/s | engine share | TCP share |",
            "|---|---|---|---|---|---|",
        ]
        for (cc, policy), rows in sharing.items():
            if policy is None:
                lines.append("| – | – | engine n/a | | | |")
                continue
            engine_share = median(rows, "engine_share")
            lines.append(
                f"| {cc or meta.get('tcp_cc')} | {policy.upper()} | {median(rows, 'engine_mbit_s')} | "
                f"{median(rows, 'tcp_mbit_s')} | {engine_share} | "
                f"{_fmt(None if engine_share is None else round(1 - engine_share, 3))} |"
            )
        lines.append("")
    queue = [r for r in results if r.get("scenario") == "queue"]
    if queue:
        lines += [
            "## Many small orders through the queue: 64 KiB uploads, all submitted at once",
            "",
            "Every transfer ok, ended once, size and sha256 checked; submit-to-done from the moment before "
            "submit() to the RESULT event. CPU is per transfer, of every process of the deployment.",
            "",
            *queue_table(queue).splitlines(),
            "",
        ]
    ctl = [r for r in results if r.get("scenario") == "control"]
    if ctl:
        lines += ["## Control: RATE 50 → 20 Mbit/s under FIXED, 100 Mbit/s, 50 ms", ""]
        if any(r.get("note") == "engine not available" for r in ctl):
            lines += ["engine n/a", ""]
        else:
            lines += [
                "| RATE effective (STATS) s | RATE effective (wire) s | FIXED mean / target | "
                "FIXED max deviation % (1 s windows) | FIXED CV % |",
                "|---|---|---|---|---|",
                f"| {_fmt(median(ctl, 'rate_effective_stats_s'))} | {_fmt(median(ctl, 'rate_effective_wire_s'))} "
                f"| {_fmt(median(ctl, 'fixed_mean_vs_target'))} | {_fmt(median(ctl, 'fixed_max_dev_pct'))} "
                f"| {_fmt(median(ctl, 'fixed_cv_pct'))} |",
                "",
            ]
    lines += setup_steps(results)
    lines += goals(results)
    return "\n".join(lines) + "\n"


def cost_fit(results: list[dict]) -> dict[str, dict]:
    """Per engine kind (fixed = encrypted, plain = -T), CPU seconds split into a cost per run (process starts,
    login, key exchange, teardown), per datagram and per byte, each end apart: a least-squares fit of
    ``cpu = run + a * datagrams + b * bytes`` (datagrams = bytes / payload per datagram) over every verified run.
    Two datagram sizes separate a from b; two file sizes separate the per-run cost from b (results with one
    file size fit without it: ``run_s`` None, its share then counted per byte)."""
    import numpy as np

    from fasp.datapath.datagram import DATA_OVERHEAD

    fits: dict[str, dict] = {}
    for kind in ("fixed", "plain"):
        runs = []  # (payload, bytes, client s, server s)
        for tool, rows in group(results, "costs", "tool").items():
            name, _, size = tool[0].removeprefix("engine-").partition("-Z")
            if name == kind and size:
                runs += [
                    (int(size) - DATA_OVERHEAD, r["bytes"], r["cpu_client_s"], r["cpu_server_s"])
                    for r in rows
                    if r.get("verified") and r.get("bytes")
                ]
        if len({p for p, *_ in runs}) < 2:
            continue
        per_run = len({n for _, n, *_ in runs}) > 1
        # columns scaled to like magnitudes: millions of datagrams, 1e9 bytes (their coefficients: µs, ns)
        x = np.array([[1.0] * per_run + [n / p / 1e6, n / 1e9] for p, n, *_ in runs])
        fit = {}
        for end, column in (("client", 2), ("server", 3)):
            coef = np.linalg.lstsq(x, np.array([r[column] for r in runs]), rcond=None)[0]
            run_s, datagram_us, byte_ns = coef if per_run else (None, *coef)
            fit[end] = {
                "run_s": None if run_s is None else round(float(run_s), 3),
                "datagram_us": round(float(datagram_us), 3),
                "byte_ns": round(float(byte_ns), 3),
            }
        fits[kind] = fit
    return fits


def cores_needed(fit: dict, gbit_s: float, payload: int) -> float:
    """Cores one end needs to move ``gbit_s`` of file bytes in datagrams carrying ``payload`` bytes each."""
    bytes_s = gbit_s * 1e9 / 8
    return bytes_s * (fit["datagram_us"] * 1e-6 / payload + fit["byte_ns"] * 1e-9)


def costs_section(results: list[dict]) -> list[str]:
    fits = cost_fit(results)
    if not fits:
        return []
    from fasp.datapath.datagram import DATA_OVERHEAD

    lines = [
        "## Costs per datagram and per byte, and what they say beyond this machine",
        "",
        "Loopback runs at two datagram sizes (`-Z`) separate the CPU a datagram costs (system calls, framing, the "
        "Python per-datagram path) from the CPU a byte costs (copies, AES-GCM/GMAC, disk); two file sizes separate "
        "both from what a run costs whatever its size (process start, login, key exchange, teardown: per run). "
        "Least squares over every run. Cores needed = rate × "
        "(per-datagram / payload + per-byte), per end; one session is one process per end, so without `-C` a "
        "session's ceiling is one core per end, and `-C N` splits a transfer over N sessions (N cores per end).",
        "",
        "| engine | end | per run s | per datagram µs | per byte ns | 1 Gbit/s cores (MTU 1500 / 9000) | "
        "10 Gbit/s cores (1500 / 9000) | one core per end carries (1500 / 9000) Gbit/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    small, jumbo = 1472 - DATA_OVERHEAD, 8972 - DATA_OVERHEAD
    for kind, fit in fits.items():
        for end, f in fit.items():
            one = [round(1 / cores_needed(f, 1, p), 2) if cores_needed(f, 1, p) else None for p in (small, jumbo)]
            lines.append(
                f"| {'encrypted' if kind == 'fixed' else 'plain (-T)'} | {end} | {_fmt(f.get('run_s'))} | "
                f"{f['datagram_us']} | {f['byte_ns']} | "
                f"{round(cores_needed(f, 1, small), 2)} / {round(cores_needed(f, 1, jumbo), 2)} | "
                f"{round(cores_needed(f, 10, small), 1)} / {round(cores_needed(f, 10, jumbo), 1)} | "
                f"{_fmt(one[0])} / {_fmt(one[1])} |"
            )
    return lines + [""]


def memory_section(wan: dict[tuple, list[dict]], link_mbit: int | None) -> list[str]:
    """Peak RSS of each end of the engine against the path's bandwidth x delay at each point."""
    rows = [
        (rtt, loss, tool, rs)
        for (rtt, loss, tool), rs in wan.items()
        if tool.startswith("engine") and any(r.get("rss_client_mib") for r in rs)
    ]
    if not rows or not link_mbit:
        return []
    lines = [
        f"### Engine memory at {link_mbit} Mbit/s (peak RSS, medians)",
        "",
        "Client: the engine process's own peak (wait4). Server: the largest peak (VmHWM) among fasp-server's "
        "session processes, the engine forked for the session, polled while it ran. A forked engine's RSS "
        "counts the pages it shares with its fork server (about 46 MiB of interpreter and imports): what "
        "grows with bandwidth × delay is the part above that.",
        "",
        "| RTT ms | loss % | tool | bandwidth × delay MiB | client RSS MiB | server RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for rtt, loss, tool, rs in rows:
        bdp = round(link_mbit * 1e6 / 8 * rtt / 1000 / (1 << 20), 2)
        lines.append(
            f"| {rtt} | {loss} | {tool} | {bdp} | {_fmt(median(rs, 'rss_client_mib'))} | "
            f"{_fmt(median(rs, 'rss_server_mib'))} |"
        )
    return lines + [""]


def setup_steps(results: list[dict]) -> list[str]:
    """The setup scenario's table: per step, ms with and without delay and the round trips between."""
    rows = [r for r in results if r.get("scenario") == "setup" and "step" in r]
    if not rows:
        return []
    lines = [
        f"## Setup: round trips from TCP connect to the first piece request, {rows[0]['rtt_ms']} ms RTT",
        "",
        "| step | ms at RTT | ms at 0 | round trips |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['step']} | {r['ms_rtt']} | {r['ms_zero']} | {r['round_trips']} |" for r in rows]
    ramp = next((r for r in results if r.get("scenario") == "setup" and "ramp" in r), None)
    if ramp is not None:
        runs = ", ".join(str(run["round_trips"]) for run in ramp["ramp_runs"])
        lines += [
            "",
            f"Then FIXED reaches 90 % of its target (the emulator's meter, 100 ms bins, from the bin of the first "
            f"data byte to the end of the first bin at 90 %, so up to two bins long) {ramp['ramp']['round_trips']} "
            f"round trips ({ramp['ramp']['ms']} ms) after the first data byte: the median of {runs}.",
        ]
    return [*lines, ""]


def wan_data_phase(wan: dict[tuple, list[dict]]) -> list[str]:
    """Per point and tool: the whole run against its data phase (emulator's meter)."""
    measured = {key: rows for key, rows in wan.items() if any("data_s" in r for r in rows)}
    if not measured:
        return []
    lines = [
        "### WAN data phase (emulator's meter, A->B; medians)",
        "",
        "Whole run: file bytes over the client's run time (setup included). Data phase: from the first "
        f"to the last 100 ms bin in which the tool delivered >= {DATA_BIN_BYTES} bytes A->B; goodput is "
        "file bytes over that time, wire is everything of the tool that crossed the bottleneck in it. "
        "Sent / delivered per file byte: the tool's bytes offered to / delivered by the path over "
        "the whole run (IP headers, retransmissions and lost packets included).",
        "",
        "| RTT ms | loss % | tool | whole run Mbit/s | data phase s | data-phase goodput Mbit/s | "
        "wire Mbit/s in data phase | sent / file bytes | delivered / file bytes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (rtt, loss, tool), rows in measured.items():
        ok = [r for r in rows if r.get("verified")]
        use = ok or rows
        lines.append(
            f"| {rtt} | {loss} | {tool} | {_cell(rows)} | {_fmt(median(use, 'data_s'))} | "
            f"{_fmt(median(use, 'data_mbit_s'))} | {_fmt(median(use, 'wire_mbit_s'))} | "
            f"{_fmt(median(use, 'sent_per_file', 4))} | {_fmt(median(use, 'delivered_per_file', 4))} |"
        )
    return lines + [""]


def goals(results: list[dict]) -> list[str]:
    """Issue 13's goals (and the control goals before them), each with where we stand."""

    def med(scenario: str, tool: str, key: str = "mbit_s", **match) -> float | None:
        rows = [
            r
            for r in results
            if r.get("scenario") == scenario and r.get("tool") == tool and all(r.get(k) == v for k, v in match.items())
        ]
        return median([r for r in rows if r.get("verified")] or rows, key)

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "not met")

    rows = []
    for scenario, rtt, loss, floor in (("fast", 200, 1, 450), ("fast", 200, 3, 425), ("fast", 200, 0, 470)):
        fixed = med(scenario, "engine-fixed", "data_mbit_s", rtt_ms=rtt, loss_pct=loss)
        fair = med(scenario, "engine-fair", "data_mbit_s", rtt_ms=rtt, loss_pct=loss)
        scp = med(scenario, "scp", "data_mbit_s", rtt_ms=rtt, loss_pct=loss)
        rows.append(
            (
                f"500 Mbit/s, {rtt} ms, {loss} %: data phase >= {floor}, FIXED and FAIR",
                f"FIXED {_fmt(fixed)}, FAIR {_fmt(fair)}, scp {_fmt(scp)} Mbit/s",
                verdict(None if fixed is None or fair is None else min(fixed, fair) >= floor),
            )
        )
    eng3 = med("wan", "engine-fixed", "data_mbit_s", rtt_ms=200, loss_pct=3)
    rows.append(
        (
            "100 Mbit/s, 200 ms, 3 %: data phase >= 88",
            f"FIXED {_fmt(eng3)} Mbit/s",
            verdict(None if eng3 is None else eng3 >= 88),
        )
    )
    whole, data = (
        med("wan", "engine-fixed", rtt_ms=200, loss_pct=1),
        med("wan", "engine-fixed", "data_mbit_s", rtt_ms=200, loss_pct=1),
    )
    rows.append(("100 Mbit/s, 200 ms, 1 %: whole run and data phase", f"{_fmt(whole)} / {_fmt(data)} Mbit/s", "figure"))
    enc_s, scp_s = med("loopback", "engine-fixed", "seconds"), med("loopback", "scp", "seconds")
    enc_c, scp_c = med("loopback", "engine-fixed", "cpu_s_per_gib"), med("loopback", "scp", "cpu_s_per_gib")
    rows.append(
        (
            "loopback, encrypted: wall time <= scp's",
            f"engine {_fmt(enc_s, ' s')}, scp {_fmt(scp_s, ' s')}",
            verdict(None if enc_s is None or scp_s is None else enc_s <= scp_s),
        )
    )
    rows.append(
        (
            "loopback, encrypted: CPU s per GiB (both ends) <= 1.5x scp's",
            f"engine {_fmt(enc_c)}, scp {_fmt(scp_c)}",
            verdict(None if enc_c is None or scp_c is None else enc_c <= 1.5 * scp_c),
        )
    )
    es, rs = med("small", "engine-fixed", "seconds"), med("small", "rsync", "seconds")
    rows.append(
        (
            "small files in <= rsync's time",
            f"engine {_fmt(es, ' s')}, rsync {_fmt(rs, ' s')}",
            verdict(None if es is None or rs is None else es <= rs),
        )
    )
    setup_total = next(
        (r["round_trips"] for r in results if r.get("scenario") == "setup" and r.get("step") == "total"), None
    )
    rows.append(
        (
            "setup: TCP connect to the first piece request in <= 8 round trips",
            f"{_fmt(setup_total)} round trips (the setup table)",
            verdict(None if setup_total is None else setup_total <= 8),
        )
    )
    ramp = next((r["ramp"]["round_trips"] for r in results if r.get("scenario") == "setup" and "ramp" in r), None)
    rows.append(
        (
            "setup: FIXED at 90 % of its target within 2 round trips of the first data byte",
            f"{_fmt(ramp)} round trips (below the setup table)",
            verdict(None if ramp is None else ramp <= 2),
        )
    )
    delivered = [  # four digits: two would round 1.0456 to 1.05 (95.24 % instead of 95.64 %)
        median(
            [
                r
                for r in results
                if r.get("scenario") == sc
                and r.get("tool") == "engine-fixed"
                and r.get("verified")
                and r.get("rtt_ms") == rtt
                and r.get("loss_pct") == 0
            ],
            "delivered_per_file",
            4,
        )
        for sc in ("wan", "fast")
        for rtt in (0, 50, 200)
    ]
    delivered = [d for d in delivered if d]
    share = round(1 / min(delivered), 4) if delivered else None
    rows.append(
        (
            "wire: >= 95.5 % of link bytes are file bytes, nothing lost (1,500 MTU)",
            f"{_fmt(None if share is None else round(100 * share, 2), ' %')} (best lossless point, engine's session "
            "included)",
            verdict(None if share is None else share >= 0.955),
        )
    )
    rss = [
        (r.get("rss_client_mib"), r.get("rss_server_mib"))
        for r in results
        if r.get("scenario") == "fast" and r.get("rtt_ms") == 200 and r.get("tool") == "engine-fixed"
    ]
    rss = [pair for pair in rss if pair[0]]
    rows.append(
        (
            "memory at 500 Mbit/s x 200 ms: peak RSS per end stated",
            "client {} / server {} MiB".format(*(round(statistics.median(x), 1) for x in zip(*rss))) if rss else "–",
            "stated" if rss else "not measured",
        )
    )
    for cc in dict.fromkeys(r.get("tcp_cc") for r in results if r.get("scenario") == "sharing" and r.get("policy")):
        got = {
            p: median(
                [
                    r
                    for r in results
                    if r.get("scenario") == "sharing" and r.get("tcp_cc") == cc and r.get("policy") == p
                ],
                "engine_share",
            )
            for p in ("fair", "high", "low")
        }
        tcp = {p: None if v is None else round(1 - v, 3) for p, v in got.items()}
        rows.append(
            (
                f"FAIR vs TCP {cc}: TCP keeps 1/3 to 2/3",
                f"TCP share {_fmt(tcp['fair'])}",
                verdict(None if tcp["fair"] is None else 1 / 3 <= tcp["fair"] <= 2 / 3),
            )
        )
        ratio = round(got["high"] / tcp["high"], 2) if got["high"] and tcp["high"] else None
        rows.append(
            (
                f"HIGH vs TCP {cc}: about twice TCP's share, TCP never under 25 %",
                f"engine/TCP {_fmt(ratio)}, TCP share {_fmt(tcp['high'])}",
                verdict(None if ratio is None else 1.5 <= ratio <= 2.5 and tcp["high"] >= 0.25),
            )
        )
        rows.append(
            (
                f"LOW vs TCP {cc}: TCP keeps >= 80 %",
                f"TCP share {_fmt(tcp['low'])}",
                verdict(None if tcp["low"] is None else tcp["low"] >= 0.8),
            )
        )
    fits = cost_fit(results)
    rows.append(
        (
            "per-datagram and per-byte costs, 1 and 10 Gbit/s on paper",
            "see the costs table" if fits else "–",
            "stated" if fits else "not measured",
        )
    )
    ctl = [r for r in results if r.get("scenario") == "control"]
    latency = median(ctl, "rate_effective_wire_s")
    rows.append(
        ("RATE effective < 1 s", f"{_fmt(latency, ' s')} (wire)", verdict(None if latency is None else latency < 1))
    )
    dev = median(ctl, "fixed_max_dev_pct")
    rows.append(
        (
            "FIXED within ±5 %",
            f"max deviation {_fmt(dev, ' %')} of mean, 1 s windows",
            verdict(None if dev is None else dev <= 5),
        )
    )
    return [
        "## Goals",
        "",
        "| goal | measured | status |",
        "|---|---|---|",
        *[f"| {g} | {m} | {v} |" for g, m, v in rows],
        "",
    ]


def link_of(grid: dict[tuple, list[dict]]) -> int | None:
    """The bottleneck rate of a grid's rows (recorded per row since the fast grid)."""
    return next((r["link_mbit"] for rows in grid.values() for r in rows if r.get("link_mbit")), None)


def plots(out: Path, stem: str, results: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for scenario in ("wan", "fast"):
        wan = group(results, scenario, "rtt_ms", "loss_pct", "tool")
        if not wan:
            continue
        losses = sorted({loss for (_, loss, _) in wan})
        tools = list(dict.fromkeys(t for (_, _, t) in wan))
        fig, axes = plt.subplots(1, len(losses), figsize=(5 * len(losses), 4), sharey=True, squeeze=False)
        for ax, loss in zip(axes[0], losses):
            for tool in tools:
                points = sorted(
                    (rtt, median(rows, "mbit_s"))
                    for (rtt, lo, t), rows in wan.items()
                    if lo == loss
                    and t == tool
                    and median(rows, "mbit_s") is not None
                    and any(r.get("verified", True) or r.get("bytes") for r in rows)
                )  # else: nothing seen
                if points:
                    (line,) = ax.plot(*zip(*points), marker="o", label=tool)
                    data = sorted(
                        (rtt, median(rows, "data_mbit_s"))
                        for (rtt, lo, t), rows in wan.items()
                        if lo == loss and t == tool and median(rows, "data_mbit_s") is not None
                    )
                    if data:
                        ax.plot(
                            *zip(*data),
                            marker="x",
                            linestyle="--",
                            color=line.get_color(),
                            label=f"{tool} (data phase)",
                        )
            ax.set_title((f"{link_of(wan)} Mbit/s, " if link_of(wan) else "") + f"loss {loss} %")
            ax.set_xlabel("RTT (ms)")
            ax.set_yscale("symlog", linthresh=1)
            ax.grid(True, alpha=0.3)
        axes[0][0].set_ylabel("throughput (Mbit/s)")
        axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside, not on, points
        fig.tight_layout()
        written.append(out / f"{scenario}-{stem}.png")
        fig.savefig(written[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
    sharing = [r for r in results if r.get("scenario") == "sharing" and r.get("series")]
    if sharing:
        ccs = list(dict.fromkeys(r.get("tcp_cc") for r in sharing))
        policies = list(dict.fromkeys(r["policy"] for r in sharing))
        fig, axes = plt.subplots(
            len(ccs), len(policies), figsize=(5 * len(policies), 3.5 * len(ccs)), sharey=True, squeeze=False
        )
        for axes_row, cc in zip(axes, ccs):
            for ax, policy in zip(axes_row, policies):
                row = next((r for r in sharing if r["policy"] == policy and r.get("tcp_cc") == cc), None)
                for name, points in (row or {}).get("series", {}).items():
                    if points:
                        ax.plot(*zip(*points), label="engine" if name == "engine" else f"TCP {cc or ''} (iperf3)")
                ax.set_title(f"{policy.upper()} vs one TCP {cc or ''} flow")
                ax.set_xlabel("seconds")
                ax.grid(True, alpha=0.3)
            axes_row[0].set_ylabel("Mbit/s delivered")
            axes_row[-1].legend()
        fig.tight_layout()
        written.append(out / f"sharing-{stem}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    ctl = [r for r in results if r.get("scenario") == "control" and r.get("wire")]
    if ctl:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        row = ctl[0]
        ax.plot(*zip(*row["wire"]), label="delivered (emulator, 100 ms bins)", alpha=0.7)
        if row["stats_rates"]:
            t, kbps = zip(*row["stats_rates"])
            ax.step(t, [k / 1000 for k in kbps], where="post", label="STATS Rate")
        ax.set_xlabel("seconds")
        ax.set_ylabel("Mbit/s")
        ax.set_title("FIXED 50 Mbit/s, RATE 20 Mbit/s")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(out / f"control-{stem}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def rewrite(data: Path) -> list[Path]:
    """Render a saved results-STEM.json again (after a change to the report)."""
    saved = json.loads(data.read_text())
    return write(data.parent, data.stem.removeprefix("results-"), saved["meta"], saved["results"])


def write(out: Path, stem: str, meta: dict, results: list[dict]) -> list[Path]:
    """results-STEM.json and .md, and the plots, under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"results-{stem}.json"
    data.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    table = out / f"results-{stem}.md"
    table.write_text(markdown(meta, results))
    return [data, table, *plots(out, stem, results)]


if __name__ == "__main__":
    import sys

    for argument in sys.argv[1:]:  # python -m bench.report docs/benchmarks/results-*.json
        for path in rewrite(Path(argument)):
            print(f"wrote {path}")
