"""Round trips per setup step: the client's setup clock (fasp.session.setupclock) on two paths.

The engine logs, with -D, when each setup step ended (``setup STEP MS ms``). The same transfer on a path
with delay and on one without differ only by waiting on the path, so for each step (its end minus the
previous step's end) the difference of the medians divided by the RTT is the round trips it costs, and what
the CPU spent (process starts, key exchange) cancels out. After setup, :func:`ramp` says how many round
trips FIXED took from its first data byte to 90 % of its target, from the emulator's meter.
"""

from __future__ import annotations

import re

from fasp.session.setupclock import STEPS

LINE = re.compile(r"\bsetup (\w+) (\d+(?:\.\d+)?) ms\b")


def marks(log: str) -> dict[str, float]:
    """The setup steps one engine run logged (milliseconds since it began to connect), first of each."""
    found: dict[str, float] = {}
    for step, ms in LINE.findall(log):
        found.setdefault(step, float(ms))
    return found


def durations(run: dict[str, float]) -> dict[str, float]:
    """Each step's own time: its end minus the latest end before it (the first from the start). Steps that
    run side by side (an upload's offer and piece request go while the UDP handshake runs) may end out of
    order: one that ended before an earlier step cost nothing of its own."""
    out, before = {}, 0.0
    for step in STEPS:
        if step in run:
            out[step] = max(run[step] - before, 0.0)
            before = max(before, run[step])
    return out


def ready(run: dict[str, float]) -> float:
    """When the first data byte could leave: once every step ended."""
    return max(run[step] for step in STEPS)


def round_trips(delayed: list[dict[str, float]], direct: list[dict[str, float]], rtt_ms: float) -> list[dict]:
    """Per step (and a total row): the least ms on each path and the round trips the delay added."""
    rows = []
    for step in (*STEPS, "total"):
        if step == "total":
            slow = [ready(run) for run in delayed if set(STEPS) <= set(run)]
            fast = [ready(run) for run in direct if set(STEPS) <= set(run)]
        else:
            slow = [d[step] for d in map(durations, delayed) if step in d]
            fast = [d[step] for d in map(durations, direct) if step in d]
        if not slow or not fast:
            continue
        ms_rtt, ms_zero = min(slow), min(fast)
        rows.append(
            {
                "step": step,
                "ms_rtt": round(ms_rtt, 1),
                "ms_zero": round(ms_zero, 1),
                "round_trips": round((ms_rtt - ms_zero) / rtt_ms, 2),
            }
        )
    return rows


RAMP_SHARE = 0.9
DATA_BYTES = 5000
"""A bin carries data from this many bytes of the engine's UDP: its handshake is a few small datagrams."""


def ramp(bins: list[dict], target_kbps: float, rtt_ms: float, bin_s: float = 0.1) -> dict | None:
    """How fast one run reached its rate, from the emulator's bins of what it delivered (one run on a fresh
    path, bins of ``bin_s``): from the start of the first bin that carried data (the first data byte arrived
    in it) to the end of the first bin in which the engine's UDP reached RAMP_SHARE of ``target_kbps``, in ms
    and round trips. Whole bins count on both sides, so it errs long, by up to two bins; None if no bin
    reached it."""
    udp = [(b["t"], sum(n for key, n in b["bytes"].items() if key.startswith("udp:"))) for b in bins]
    first = next((t for t, n in udp if n >= DATA_BYTES), None)
    need = RAMP_SHARE * target_kbps * 1000 / 8 * bin_s
    reached = next((t for t, n in udp if first is not None and t >= first and n >= need), None)
    if first is None or reached is None:
        return None
    ms = (reached + bin_s - first) * 1000
    return {"ms": round(ms, 1), "round_trips": round(ms / rtt_ms, 2)}
