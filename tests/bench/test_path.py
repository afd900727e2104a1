"""The sans-IO path model: rate, delay, queue limit, loss statistics."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from bench.path import Link, PathSpec, Verdict


def test_serialization_spaces_packets_at_the_bottleneck_rate():
    link = Link(PathSpec(rate_bps=8e6, delay_s=0.0))  # 1000 bytes = 1 ms
    for _ in range(10):
        assert link.offer(0.0, bytes(1000)) is Verdict.QUEUED
    assert len(link.due(0.0005)) == 0
    assert len(link.due(0.001)) == 1
    assert len(link.due(0.0049)) == 3
    assert len(link.due(0.0101)) == 6
    assert link.next_due() is None


def test_one_way_delay_is_added_to_every_packet():
    link = Link(PathSpec(rate_bps=None, delay_s=0.1))
    link.offer(1.0, b"x" * 100)
    assert link.next_due() == pytest.approx(1.1)
    assert link.due(1.0999) == []
    assert link.due(1.1) == [b"x" * 100]


def test_queue_is_bounded_in_bytes_and_drops_the_tail():
    link = Link(PathSpec(rate_bps=8e6, delay_s=0.05, queue_bytes=5000))
    verdicts = [link.offer(0.0, bytes(1000)) for _ in range(8)]
    assert verdicts == [Verdict.QUEUED] * 5 + [Verdict.DROPPED] * 3
    assert link.counters.dropped == 3
    # 2 ms later two packets have left the queue: room for two more, not three
    assert [link.offer(0.002, bytes(1000)) for _ in range(3)] == [Verdict.QUEUED] * 2 + [Verdict.DROPPED]


def test_wan_queue_is_one_bandwidth_delay_product():
    spec = PathSpec.wan(100e6, 0.2, 0.01)
    assert spec.queue_bytes == 2_500_000
    assert spec.delay_s == pytest.approx(0.1)
    assert PathSpec.wan(100e6, 0.0, 0.0).queue_bytes == 64 * 1500


@pytest.mark.parametrize("loss", [0.01, 0.03, 0.2])
def test_random_loss_matches_the_configured_rate(loss):
    link = Link(PathSpec(rate_bps=None, loss=loss), rng=random.Random(7))
    n = 100_000
    for i in range(n):
        link.offer(i * 1e-6, bytes(10))
    observed = link.counters.lost / n
    assert observed == pytest.approx(loss, abs=4 * (loss * (1 - loss) / n) ** 0.5)


def test_loss_is_reproducible_with_a_seed():
    def pattern(seed):
        link = Link(PathSpec(rate_bps=None, loss=0.1), rng=random.Random(seed))
        return [link.offer(0.0, b"p") for _ in range(500)]

    assert pattern(3) == pattern(3)
    assert pattern(3) != pattern(4)


def test_invalid_specs_are_refused():
    for bad in (dict(rate_bps=0), dict(rate_bps=None, loss=1.0), dict(rate_bps=None, delay_s=-1)):
        with pytest.raises(ValueError):
            PathSpec(**bad)


arrivals = st.lists(st.tuples(st.floats(0, 0.01), st.integers(40, 1500)), min_size=1, max_size=200)


@settings(max_examples=200, deadline=None)
@given(arrivals, st.floats(1e5, 1e9), st.floats(0, 0.3), st.integers(1500, 100_000))
def test_delivery_respects_order_delay_rate_and_conservation(gaps, rate, delay, queue):
    link = Link(PathSpec(rate_bps=rate, delay_s=delay, queue_bytes=queue), rng=random.Random(0))
    now, first = 0.0, None
    accepted = []
    for gap, size in gaps:
        now += gap
        packet = len(accepted).to_bytes(4, "big") + bytes(size - 4)
        if link.offer(now, packet) is Verdict.QUEUED:
            accepted.append((now, packet))
            first = now if first is None else first
    counters = link.counters
    assert counters.offered == len(gaps) == len(accepted) + counters.dropped
    if not accepted:
        return
    sent_bytes, delivered = 0, []
    t = link.next_due()
    while t is not None:
        for packet in link.due(t):
            sent_bytes += len(packet)
            delivered.append(packet)
            # never faster than the bottleneck since the first arrival, never before the delay
            assert t >= first + delay + sent_bytes * 8 / rate - 1e-9
        t = link.next_due()
    assert delivered == [p for _, p in accepted]  # nothing reordered or lost
    assert counters.delivered_bytes == sent_bytes
