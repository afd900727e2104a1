"""--auto-detect-capacity in the rate controller (sans-IO, fake time): the capacity is measured once, then the
target is that percent of it (FIXED: exactly; the others: at most). The bottleneck is test_rate's fluid queue."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from fasp.datapath.rate import CEILING_KBPS, RateController, RateSettings
from tests.datapath.test_rate import run


def auto(percent: int, policy: str = "fixed", ceiling_kbps: int = CEILING_KBPS, min_kbps: int = 0) -> RateController:
    return RateController(RateSettings(ceiling_kbps, min_kbps, policy, percent=percent))


def test_fixed_holds_exactly_the_percent_of_the_measured_capacity():
    c = auto(50)
    assert c.measuring
    rate = run([c], 40e6, 0.02, 4)[0]
    assert 0.85 * 40e6 <= c.capacity_bps <= 1.15 * 40e6
    assert rate == pytest.approx(0.5 * c.capacity_bps)
    assert not c.measuring


def test_an_absolute_fixed_target_means_kilobits():
    """Without the percent mode the same number is 50 kbit/s, whatever the path could carry."""
    c = RateController(RateSettings(50, policy="fixed"))
    assert run([c], 40e6, 0.02, 2)[0] == 50_000
    assert c.capacity_bps is None


@pytest.mark.parametrize("policy", ["fair", "high", "low"])
def test_adaptive_policies_stay_at_or_below_the_percent(policy):
    c = auto(50, policy)
    rate = run([c], 40e6, 0.02, 6)[0]
    assert 0.85 * 40e6 <= c.capacity_bps <= 1.15 * 40e6
    assert rate <= 0.5 * c.capacity_bps + 1
    if policy != "low":  # alone on the path, FAIR and HIGH reach the cap
        assert rate >= 0.45 * c.capacity_bps


def test_a_new_percent_applies_to_the_capacity_already_measured():
    c = auto(50)
    run([c], 40e6, 0.02, 3)
    capacity = c.capacity_bps
    c.set_settings(RateSettings(CEILING_KBPS, 0, "fixed", percent=25))
    assert c.capacity_bps == capacity
    assert c.rate_bps == pytest.approx(0.25 * capacity)


def test_the_ceiling_bounds_the_measurement_and_the_floor_still_holds():
    c = auto(50, ceiling_kbps=10_000)  # a server's cap of 10 Mbit/s on a 100 Mbit/s path
    rate = run([c], 100e6, 0.02, 3)[0]
    assert c.capacity_bps <= 10e6 * 1.01
    assert rate == pytest.approx(0.5 * c.capacity_bps)
    floored = auto(10, min_kbps=8_000)  # -m stays absolute: 8 Mbit/s beats 10 % of 40
    assert run([floored], 40e6, 0.02, 3)[0] == 8e6


@settings(max_examples=25, deadline=None)
@given(
    percent=st.integers(1, 100),
    capacity_mbit=st.integers(5, 400),
    rtt_ms=st.integers(5, 150),
    policy=st.sampled_from(["fixed", "fair", "high", "low"]),
)
def test_any_path_any_percent(percent, capacity_mbit, rtt_ms, policy):
    c = auto(percent, policy)
    rate = run([c], capacity_mbit * 1e6, rtt_ms / 1000, 3 + 40 * rtt_ms / 1000)[0]
    assert c.capacity_bps is not None
    assert 0.75 * capacity_mbit * 1e6 <= c.capacity_bps <= 1.25 * capacity_mbit * 1e6
    cap = percent / 100 * c.capacity_bps
    assert rate <= cap * 1.0001 + 1000
    if policy == "fixed":
        assert rate == pytest.approx(max(cap, 1000.0))
