"""The WAN data phase: goodput once data flows, from the emulator's bins."""

import argparse

import pytest

from bench.report import DATA_BIN_BYTES, data_phase, markdown, tool_flows
from bench.run import chosen, wan_point

SSH, ENGINE_UDP, ENGINE_TCP = "tcp:50000>22", "udp:40000>33001", "tcp:41000>33001"
MIB = 1 << 20


def row(t: float, **flows: int) -> dict:
    return {"dir": "ab", "t": round(t, 3), "bytes": {key.replace("_", ":"): n for key, n in flows.items()}}


def bins(t0: float, count: int, key: str, n: int) -> list[dict]:
    return [{"dir": "ab", "t": round(t0 + i / 10, 3), "bytes": {key: n}} for i in range(count)]


def test_setup_and_stragglers_are_outside_the_data_phase():
    setup = [{"dir": "ab", "t": t, "bytes": {SSH: 1500}} for t in (10.0, 10.2, 10.4, 10.6)]  # handshake
    data = bins(10.8, 80, SSH, 1_000_000)  # 8 s of 80 Mbit/s, bins 10.8 .. 18.7
    tail = [{"dir": "ab", "t": 18.8, "bytes": {SSH: 300}}]  # closing messages
    other = [{"dir": "ab", "t": 12.0, "bytes": {"udp:5000>5201": 999_999}}]  # not this tool
    result = data_phase(setup + data + tail + other, [], 10.0, 19.0, tool_flows("scp"), 80_000_000)
    assert result["data_s"] == 8.0
    assert result["data_mbit_s"] == 80.0  # file bytes over the data phase
    assert result["wire_mbit_s"] == 80.0  # what crossed the bottleneck in it
    assert result["delivered_per_file"] == round((4 * 1500 + 80_000_000 + 300) / 80_000_000, 4)
    assert result["sent_per_file"] is None  # no sent bins


def test_stalls_inside_the_phase_count_and_other_runs_do_not():
    before = bins(0.0, 10, SSH, 1_000_000)  # an earlier run, before this one started
    data = bins(5.0, 10, ENGINE_UDP, 1_250_000) + bins(7.0, 10, ENGINE_UDP, 1_250_000)  # 1 s stall between
    control = [{"dir": "ab", "t": 5.3, "bytes": {ENGINE_TCP: 200}}]
    sent = [{"dir": "ab-sent", "t": t["t"], "bytes": {ENGINE_UDP: 1_300_000}} for t in data]
    merged = sorted(before + data + control, key=lambda r: r["t"])
    result = data_phase(merged, sent, 4.5, 9.0, tool_flows("engine-fixed"), 25 * MIB)
    assert result["data_s"] == 3.0
    assert result["data_mbit_s"] == round(25 * MIB * 8 / 3.0 / 1e6, 2)
    assert result["wire_mbit_s"] == round((20 * 1_250_000 + 200) * 8 / 3.0 / 1e6, 2)
    assert result["sent_per_file"] == round(20 * 1_300_000 / (25 * MIB), 4)


def test_a_bin_carries_data_from_the_threshold_on():
    quiet = [{"dir": "ab", "t": 1.0, "bytes": {SSH: DATA_BIN_BYTES - 1}}]
    loud = [{"dir": "ab", "t": 1.5, "bytes": {SSH: DATA_BIN_BYTES}}]
    assert data_phase(quiet + loud, [], 0.0, 3.0, tool_flows("rsync"), 10_000)["data_s"] == 0.1
    nothing = data_phase(quiet, [], 0.0, 3.0, tool_flows("rsync"), 10_000)
    assert nothing["data_s"] is None and nothing["data_mbit_s"] is None


def test_tool_flows_pick_the_tools_own_connections():
    flows = {SSH: 1, ENGINE_UDP: 10, ENGINE_TCP: 100, "tcp:41000>5201": 1000, "icmp": 10000}
    assert tool_flows("scp")(flows) == 1
    assert tool_flows("rsync")(flows) == 1
    assert tool_flows("engine-fair")(flows) == 110


def test_markdown_shows_both_columns():
    meta = {
        "profile": "full",
        "started": "now",
        "git": "abc",
        "seconds": 1,
        "cpus": 2,
        "engine_available": True,
        "link_mbit": 100,
        "tcp_cc": "bbr",
        "wan_mib": 128,
    }
    results = [
        {
            "scenario": "wan",
            "rtt_ms": 200,
            "loss_pct": 1,
            "tool": "scp",
            "mbit_s": 28.5,
            "verified": True,
            "data_s": 30.0,
            "data_mbit_s": 35.8,
            "wire_mbit_s": 37.1,
            "sent_per_file": 1.0612,
            "delivered_per_file": 1.0502,
        }
    ]
    text = markdown(meta, results)
    assert "queue one BDP, 128 MiB file" in text
    assert "| 200 | 1 | scp | 28.5 | 30.0 | 35.8 | 37.1 | 1.0612 | 1.0502 |" in text
    assert "| 100 Mbit/s, 200 ms, 1 %: whole run and data phase | – / – Mbit/s | figure |" in text
    assert "target rate in the grids" not in text
    capped = markdown({**meta, "cap_kbps": 1_000_000}, results)  # --cap-kbps: the figures are not the link-rate ones
    assert "The engine's target rate in the grids: 1000000 kbit/s, not the link's rate." in capped


def _chosen(*flags: str):
    ns = argparse.Namespace(quick=False, only=None, wan_point=None, fast_point=None, wan_mib=None)
    for flag, value in zip(flags[::2], flags[1::2]):
        name = flag.removeprefix("--").replace("-", "_")
        if name == "only":
            ns.only = [*(ns.only or []), value]
        else:
            setattr(ns, name, [*(getattr(ns, name) or []), wan_point(value)] if name.endswith("point") else int(value))
    return chosen(ns)


def test_chosen_points_pick_their_grids_and_name_the_files():
    profile, stem, only = _chosen()
    assert (stem, only) == ("full", None) and profile.fast_points == ((0, 0), (200, 0), (200, 1), (200, 3))
    profile, stem, only = _chosen("--fast-point", "200:0.01")
    assert (stem, only, profile.fast_points) == ("fast200-0.01", ["fast"], ((200, 0.01),))
    # both grids chosen: both run, both named (the fast points once replaced the wan ones' name and were not run)
    profile, stem, only = _chosen("--wan-point", "200:1", "--fast-point", "200:0", "--wan-mib", "64")
    assert (stem, only) == ("wan200-1+fast200-0-64MiB", ["wan", "fast"])
    assert profile.wan_points == ((200, 1),) and profile.fast_points == ((200, 0),) and profile.wan_bytes == 64 << 20
    # a part of the full run is named after its scenarios: `--only small` once wrote results-full.*
    profile, stem, only = _chosen("--only", "small", "--only", "setup")
    assert (stem, only) == ("small+setup", ["small", "setup"])


def test_wan_point_parses_rtt_and_loss():
    assert wan_point("200:1") == (200, 1)
    assert wan_point("50:0.5") == (50, 0.5)
    with pytest.raises(argparse.ArgumentTypeError):
        wan_point("200")
