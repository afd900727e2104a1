"""The pure analyses behind the benchmark tables: sharing and control."""

import json

import pytest

from bench import report, setup
from bench.report import control, markdown, share, write

ENGINE, TCP = "udp:40000>33001", "tcp:41000>5201"


def bins(rates: list[tuple[float, float]], key: str, start: float = 0.0) -> list[dict]:
    """100 ms bins carrying ``mbit_s`` of flow ``key`` from each listed time on."""
    out = []
    for i in range(int(start * 10), 200):
        t = i / 10
        mbit = [r for at, r in rates if at <= t][-1] if any(at <= t for at, _ in rates) else 0
        if mbit:
            out.append({"dir": "ab", "t": t, "bytes": {key: int(mbit * 1e6 / 8 / 10)}})
    return out


def merge(*series: list[dict]) -> list[dict]:
    merged: dict[float, dict] = {}
    for rows in series:
        for row in rows:
            merged.setdefault(row["t"], {"dir": "ab", "t": row["t"], "bytes": {}})["bytes"].update(row["bytes"])
    return sorted(merged.values(), key=lambda r: r["t"])


def test_share_counts_from_the_engines_first_byte():
    data = merge(bins([(0, 90)], TCP), bins([(2, 30)], ENGINE, start=2))
    result = share(data, 1.0, 12.0)
    assert result["seconds"] == 10.0
    assert result["engine_mbit_s"] == 30.0 and result["tcp_mbit_s"] == 90.0
    assert result["engine_share"] == 0.25
    assert len(result["series"]["engine"]) == 10


def test_control_finds_rate_change_on_the_wire_and_in_stats():
    t0 = 100.0
    wire = bins([(1.0, 51.0), (7.3, 20.4)], ENGINE)
    events = [{"t": t0 + 1.0, "type": "INIT"}]
    events += [{"t": t0 + s, "type": "STATS", "Rate": "50000"} for s in range(2, 7)]
    events += [
        {"t": t0 + 7.0, "sent": "RATE", "Rate": 20000},
        {"t": t0 + 7.5, "type": "STATS", "Rate": "30000"},
        {"t": t0 + 7.9, "type": "STATS", "Rate": "20100"},
        {"t": t0 + 12.0, "type": "DONE"},
    ]
    result = control(wire, t0, events, 50_000, 20_000)
    assert result["fixed_mean_vs_target"] == 1.02
    assert result["fixed_max_dev_pct"] == 0.0
    assert result["rate_effective_stats_s"] == 0.9
    assert abs(result["rate_effective_wire_s"] - 0.3) < 0.01


def test_markdown_marks_missing_engine_and_unverified_runs():
    meta = {
        "profile": "quick",
        "started": "now",
        "git": "abc",
        "seconds": 1,
        "cpus": 2,
        "engine_available": False,
        "link_mbit": 100,
        "tcp_cc": "cubic",
    }
    results = [
        {"scenario": "wan", "rtt_ms": 200, "loss_pct": 1, "tool": "engine-fixed", "note": "engine not available"},
        {"scenario": "wan", "rtt_ms": 200, "loss_pct": 1, "tool": "scp", "mbit_s": 1.5, "verified": False},
        {"scenario": "wan", "rtt_ms": 200, "loss_pct": 1, "tool": "scp", "mbit_s": 2.5, "verified": True},
    ]
    text = markdown(meta, results)
    assert "| 200 | 1 | engine n/a | 2.5 (1/2 incomplete) |" in text
    assert "not measured" in text


@pytest.mark.slow
def test_write_produces_json_markdown_and_plots(tmp_path):
    meta = {
        "profile": "quick",
        "started": "now",
        "git": "abc",
        "seconds": 1,
        "cpus": 2,
        "engine_available": True,
        "link_mbit": 100,
        "tcp_cc": "bbr",
    }
    results = [
        {"scenario": "wan", "rtt_ms": rtt, "loss_pct": 1, "tool": tool, "mbit_s": mbit, "verified": True}
        for rtt, tool, mbit in (
            (50, "scp", 40.0),
            (200, "scp", 10.0),
            (50, "engine-fixed", 90.0),
            (200, "engine-fixed", 91.0),
        )
    ]
    results.append(
        {
            "scenario": "sharing",
            "policy": "fair",
            "engine_share": 0.5,
            "series": {"engine": [(0, 50.0), (1, 49.0)], "tcp": [(0, 48.0), (1, 50.0)]},
        }
    )
    results.append({"scenario": "control", "wire": [(0.0, 50.0), (0.1, 20.0)], "stats_rates": [(0.0, 50000)]})
    paths = write(tmp_path, "quick-reno", meta, results)
    names = sorted(p.name for p in paths)
    assert names == [
        "control-quick-reno.png",
        "results-quick-reno.json",
        "results-quick-reno.md",
        "sharing-quick-reno.png",
        "wan-quick-reno.png",
    ]
    for path in paths:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "results-quick-reno.json").read_text())["results"] == json.loads(json.dumps(results))
    assert "| 200 | 1 | 10.0 | 91.0 |" in (tmp_path / "results-quick-reno.md").read_text()


def test_cost_fit_separates_a_per_run_cost_from_per_byte_cpu():
    """Two file sizes as well: a fixed cost per run (process starts, login) is fitted as such, not spread over
    the bytes as a per-byte cost; noise of a few ms per run moves the figures little."""
    from bench.report import cost_fit
    from fasp.datapath.datagram import DATA_OVERHEAD

    rows = []
    for i, (size, n) in enumerate((z, n) for z in (1400, 8192) for n in (16 << 20, 128 << 20) for _ in range(3)):
        cpu = 1.5 + 4e-6 * n / (size - DATA_OVERHEAD) + 2e-9 * n + 0.004 * (i % 3 - 1)
        rows.append(
            dict(
                scenario="costs",
                tool=f"engine-plain-Z{size}",
                verified=True,
                bytes=n,
                cpu_client_s=cpu,
                cpu_server_s=cpu + 0.44,
            )
        )
    fit = cost_fit(rows)["plain"]
    assert fit["client"]["run_s"] == pytest.approx(1.5, abs=0.01)
    assert fit["server"]["run_s"] == pytest.approx(1.94, abs=0.01)  # e.g. an scrypt check at each start
    for end in ("client", "server"):
        assert fit[end]["datagram_us"] == pytest.approx(4.0, abs=0.05)
        assert fit[end]["byte_ns"] == pytest.approx(2.0, abs=0.05)


def test_cost_fit_separates_per_datagram_from_per_byte_cpu():
    """Two datagram sizes: the fit recovers the per-datagram and per-byte costs that made the CPU figures."""
    from bench.report import cores_needed, cost_fit
    from fasp.datapath.datagram import DATA_OVERHEAD

    a, b = 4e-6, 2e-9  # 4 µs per datagram, 2 ns per byte (client); the server twice as costly per datagram
    rows = []
    for size in (1400, 8192):
        payload = size - DATA_OVERHEAD
        n = 1 << 30
        client = a * n / payload + b * n
        server = 2 * a * n / payload + b * n
        rows.append(
            dict(
                scenario="costs",
                tool=f"engine-fixed-Z{size}",
                verified=True,
                bytes=n,
                cpu_client_s=client,
                cpu_server_s=server,
            )
        )
    fit = cost_fit(rows)["fixed"]
    assert fit["client"] == {"run_s": None, "datagram_us": 4.0, "byte_ns": 2.0}  # one file size: no per-run term
    assert fit["server"] == {"run_s": None, "datagram_us": 8.0, "byte_ns": 2.0}
    # 1 Gbit/s in 1,400-byte payloads: 89,286 datagrams/s x 4 µs + 125 MB/s x 2 ns = 0.357 + 0.25 cores
    assert cores_needed(fit["client"], 1, 1400) == pytest.approx(0.607, abs=0.001)
    assert "## Costs per datagram and per byte" in markdown(
        {
            "profile": "t",
            "started": "now",
            "git": "g",
            "seconds": 1,
            "cpus": 2,
            "engine_available": True,
            "link_mbit": 100,
        },
        rows,
    )


def test_goals_judge_the_fast_grid_and_sharing_per_congestion_control():
    from bench.report import goals

    rows = [
        dict(scenario="fast", rtt_ms=200, loss_pct=1, tool="engine-fixed", verified=True, data_mbit_s=460.0),
        dict(scenario="fast", rtt_ms=200, loss_pct=1, tool="engine-fair", verified=True, data_mbit_s=440.0),
        dict(scenario="sharing", tcp_cc="cubic", policy="fair", engine_share=0.5),
        dict(scenario="sharing", tcp_cc="cubic", policy="high", engine_share=0.8),
        dict(scenario="sharing", tcp_cc="bbr", policy="fair", engine_share=0.7),
        dict(scenario="sharing", tcp_cc="bbr", policy="low", engine_share=0.1),
    ]
    text = "\n".join(goals(rows))
    assert "| 500 Mbit/s, 200 ms, 1 %: data phase >= 450, FIXED and FAIR | FIXED 460.0, FAIR 440.0" in text
    assert "FIXED and FAIR | FIXED 460.0, FAIR 440.0, scp – Mbit/s | not met |" in text  # FAIR under 450
    assert "| FAIR vs TCP cubic: TCP keeps 1/3 to 2/3 | TCP share 0.5 | met |" in text
    assert "| FAIR vs TCP bbr: TCP keeps 1/3 to 2/3 | TCP share 0.3 | not met |" in text
    assert (
        "| HIGH vs TCP cubic: about twice TCP's share, TCP never under 25 % | engine/TCP 4.0, TCP share 0.2 | not met |"
        in text
    )
    assert "| LOW vs TCP bbr: TCP keeps >= 80 % | TCP share 0.9 | met |" in text


def test_setup_round_trips_from_the_engine_log():
    """Per step, the least time with delay minus the least without, in RTTs; the report shows the table."""
    log = "fasp-ascp: fasp.session.setup: setup {} {} ms\n"

    def run(*ms: float) -> dict[str, float]:
        text = "noise\n" + "".join(log.format(step, m) for step, m in zip(setup.STEPS, ms, strict=True))
        return setup.marks(text + log.format("piece", 99999))  # only a step's first end counts

    direct = [run(1, 900, 950, 1500, 1510, 1520), run(2, 801, 851, 1600, 1610, 1620)]
    delayed = [run(201, 1600, 2050, 2700, 2910, 3120), run(205, 1700, 2100, 2650, 2860, 3080)]
    rows = {r["step"]: r["round_trips"] for r in setup.round_trips(delayed, direct, 200)}
    # tcp 200/200; ssh (1399 - 799)/200; engine (400 - 50)/200; welcome 550 both ways; total (3080 - 1520)/200
    assert rows == {"tcp": 1.0, "ssh": 3.0, "engine": 1.75, "welcome": 0.0, "udp": 1.0, "piece": 1.0, "total": 7.8}
    table = setup.round_trips(delayed, direct, 200)
    text = report.setup_steps([{"scenario": "setup", "rtt_ms": 200, **row} for row in table])
    assert "| ssh | 1399.0 | 799.0 | 3.0 |" in "\n".join(text) and "| total | 3080.0 | 1520.0 | 7.8 |" in "\n".join(
        text
    )


def test_setup_steps_that_overlap_cost_the_latest_end():
    """An upload's piece request may come before the UDP handshake's answer: the piece step then costs
    nothing of its own, and the total runs to the later of the two."""
    first = {"tcp": 1, "ssh": 900, "engine": 950, "welcome": 1500}
    direct = [{**first, "udp": 1510, "piece": 1505}]
    delayed = [{**first, "udp": 1710, "piece": 1708}, {**first, "udp": 1720, "piece": 1705}]
    assert setup.durations(delayed[1])["piece"] == 0.0 and setup.durations(delayed[1])["udp"] == 220
    rows = {r["step"]: r["round_trips"] for r in setup.round_trips(delayed, direct, 200)}
    assert rows["udp"] == 1.0 and rows["piece"] == 0.0 and rows["total"] == 1.0


def test_fixed_ramp_from_the_first_data_bin_to_the_first_bin_at_90_percent():
    """Handshake datagrams do not start the clock; the bin at 90 % counts whole; the report quotes the median."""
    handshake = [{"dir": "ab", "t": 0.0, "bytes": {ENGINE: 300, "tcp:40001>33001": 90000}}]
    rising = bins([(0.5, 40), (0.6, 85), (0.7, 95)], ENGINE)  # 100 Mbit/s target: 90 % from 0.7 s on
    assert setup.ramp(handshake + rising, 100_000, 200) == {"ms": 300.0, "round_trips": 1.5}
    assert setup.ramp(bins([(0.5, 85)], ENGINE), 100_000, 200) is None  # never at 90 %
    runs = [{"ms": 300.0, "round_trips": 1.5}, {"ms": 200.0, "round_trips": 1.0}]
    table = [{"scenario": "setup", "rtt_ms": 200, "step": "total", "ms_rtt": 1, "ms_zero": 0, "round_trips": 7}]
    text = "\n".join(report.setup_steps([*table, {"scenario": "setup", "ramp": runs[0], "ramp_runs": runs}]))
    assert "1.5 round trips (300.0 ms) after the first data byte: the median of 1.5, 1.0" in text
    goals = "\n".join(report.goals([*table, {"scenario": "setup", "ramp": runs[0], "ramp_runs": runs}]))
    assert "| setup: FIXED at 90 % of its target within 2 round trips of the first data byte | 1.5 round" in goals
    assert "| setup: TCP connect to the first piece request in <= 8 round trips | 7 round trips" in goals
