"""Path MTU search (sans-IO): what it probes next after an acknowledgement, a refusal or lost probes."""

from __future__ import annotations

from fasp.datapath.pmtu import BASE, ETHERNET, JUMBO, MAX_DATAGRAM, MAX_PROBES, PathMtu, paced_limit


def test_the_ceiling_first_then_done_once_acknowledged():
    pm = PathMtu()
    assert pm.size == BASE and pm.next_probe(0.0, 0.1) == JUMBO
    assert pm.next_probe(0.05, 0.1) is None  # one probe at a time
    assert pm.on_acknowledged(JUMBO) and pm.size == JUMBO
    assert not pm.searching and pm.next_probe(1.0, 0.1) is None and pm.due(0.1) is None


def test_a_refusal_naming_the_path_mtu_is_probed_as_it_is():
    """The kernel says 1,400 (a tunnel): the next probe is exactly 1,372, not a plateau near it."""
    pm = PathMtu()
    pm.next_probe(0.0, 0.1)
    pm.on_refused(JUMBO, 1372)
    assert pm.next_probe(0.0, 0.1) == 1372
    assert pm.on_acknowledged(1372) and pm.size == 1372 and not pm.searching


def test_lost_probes_step_down_the_plateaus():
    """No ICMP: each size is given MAX_PROBES timeouts, then the next plateau below is tried."""
    pm, now, tried = PathMtu(), 0.0, []
    while (size := pm.next_probe(now, 0.1)) != 1472:
        tried.append(size)
        now += 0.1
    assert tried == [JUMBO] * MAX_PROBES
    assert pm.on_acknowledged(1472) and pm.size == 1472
    assert not pm.searching  # nothing between 1,472 and the jumbo size that failed


def test_a_shrunk_path_drops_the_size_at_once():
    """The route changed: DATA of the confirmed size is refused, and the kernel names the new path MTU."""
    pm = PathMtu()
    pm.next_probe(0.0, 0.1)
    pm.on_acknowledged(JUMBO)
    pm.on_refused(JUMBO, 1472)
    assert pm.size == 1472 and not pm.searching
    pm.on_refused(1472, None)  # and again, the kernel saying nothing: back to the base, the plateaus below probed
    assert pm.size == BASE and pm.next_probe(1.0, 0.1) == 1464


def test_a_route_the_kernel_says_is_wider_is_searched_up_to_it():
    """Loopback (the kernel's route carries 65,508-byte UDP payloads): the first probe is the largest datagram,
    not a jumbo frame's; a route that says JUMBO or less, or says nothing, leaves the blind search as it was."""
    wide = PathMtu()
    wide.widen(65508)
    assert wide.next_probe(0.0, 0.1) == MAX_DATAGRAM
    assert wide.on_acknowledged(MAX_DATAGRAM) and wide.size == MAX_DATAGRAM and not wide.searching
    for said in (1472, JUMBO, None):
        pm = PathMtu()
        pm.widen(said)
        assert pm.next_probe(0.0, 0.1) == JUMBO
    late = PathMtu()
    late.next_probe(0.0, 0.1)
    late.widen(65508)  # a search under way keeps its ceiling
    assert late.on_acknowledged(JUMBO) and late.size == JUMBO and not late.searching


def test_the_rate_bounds_the_datagram_between_an_ethernet_frame_and_the_largest():
    assert paced_limit(800e3) == ETHERNET  # 50 bytes' worth: never under 1,472
    assert paced_limit(200e6) == 12_500  # half a millisecond of it
    assert paced_limit(2e9) == MAX_DATAGRAM
