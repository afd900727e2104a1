"""bench.peers.stolen_s: the CPU time the hypervisor took, which each run records beside its own CPU."""

from __future__ import annotations

import os

from bench.peers import stolen_s


def test_stolen_time_is_the_steal_column_of_proc_stat_in_seconds():
    before = stolen_s()
    with open("/proc/stat") as stat:
        ticks = int(stat.readline().split()[8])
    after = stolen_s()
    assert before <= ticks / os.sysconf("SC_CLK_TCK") <= after
