"""Rate controllers, one per ascp policy (sans-IO: feedback and time in, a sending rate out).

Congestion is read from queuing delay (the standing RTT above the smallest RTT
seen), and from loss only where the queue says it is congestion, so random loss
does not slow a transfer down:

- FIXED sends at the target rate.
- FAIR is FAST-TCP turned into a rate: each flow aims to keep ``alpha`` bytes
  (more on long paths) queued at the bottleneck (``rate <- rate*base/rtt + alpha/rtt``, smoothed; on paths of
  CLOCKED_RTT or more the rate is a window over the RTT, so it falls at once as a queue grows),
  which shares a link evenly between FAIR flows, and against a flow that keeps
  the buffer full (TCP BBR) leaves FAIR ``alpha``/queuing delay: alpha is sized so
  that is about half of a 100 Mbit/s link with a one-BDP buffer. Slow start doubles the rate
  each RTT until a queue appears, read as FAST reads it (the least RTT of the last half RTT: a delay
  spike of a busy machine is no queue, a queue that builds persists). The receive window lets in-flight
  bytes double too, so the overshoot queues at most one bandwidth x delay. Slow start then restarts
  from the delivery rate the receiver measured (the bottleneck's, BBR-style) instead of the overshoot.
  Doubling from 10 Mbit/s takes six RTTs to fill 500 Mbit/s (1.2 s at 200 ms: a tenth of a 512 MiB
  transfer), so on paths of TRAIN_MIN_RTT or more FAIR and HIGH first send a short train at the cap (TRAIN_S, a
  tenth of an RTT, TRAIN_BYTES at most): the bottleneck spreads it to its own rate, the receiver reports that
  rate (it reports every 5 ms while a train may be arriving) and slow start goes on from it an RTT after the
  first data, not six; if the train arrived slower than it went, the bottleneck is below the cap and slow start
  ends at its rate instead. A target that was set (-l, or aspera.conf's: ``start_at_target``) is the initial
  rate, as IBM documents its target rate for every policy: after the train FAIR and HIGH go on at the cap, not at
  INITIAL_BPS, until the train's reports are in, so a path the target fits is full from the first data (that
  blind round trip at 10 Mbit/s cost FAIR two 100 ms bins in 93 at 500 Mbit/s, 200 ms). A set target above the
  link floods the bottleneck for that round trip, as FIXED's would, until the reports end slow start at the
  bottleneck's rate; the engine's own default target (no -l) is no one's estimate of the path, so it keeps the
  short train alone.
  A rate that reaches the cap first watches two RTTs more for that queue, which shows an RTT or more
  after the rate that builds it (a cap above the link, ended there, flooded a one-BDP buffer).
  With no queue the rate climbs back 25 % per RTT up to the best delivery rate
  of the last ten RTTs, and 10 % per RTT beyond it (FAST alone would add only ``alpha``
  per RTT: a slow start ended early by a delay spike took 15 s to fill 500 Mbit/s x 200 ms), to 1.5 times
  that rate, or on paths of CLOCKED_RTT or more 1.1 times (heard of an RTT late, more built a queue there).
  Two loss rules make FAIR share with loss-based TCP (CUBIC), which fills the
  buffer until it drops:
  * congestion loss (Veno-like): loss above twice the path's random loss (the least
    loss of the last ten RTTs since slow start) while the standing queue is near its peak
    of the last ten seconds (slow start's own overshoot not counted), and that peak
    holds more than this flow's own could (someone else's backlog too: tail drop), cuts the rate 20 % (once per
    RTT) and stops the climb back for ten RTTs. Random loss meets no queue but this flow's own (or none), so it
    is left alone; nor does it add to what tail drop adds (a target above the link let the queue pass 1.5
    ``alpha`` now and then: 1 % random loss then cut the rate 20 % every few seconds). A flow's own is 1.5
    ``alpha``, or on a long fat path ``alpha`` and a fifth of its rate x RTT: the climb adds a tenth per RTT
    and hears of the queue an RTT late, and FAST brings a target a little above the link back with the same
    lag (at 500 Mbit/s x 200 ms the queue stood at 13-21 ms, 1.5 ``alpha`` is 12, and at 0.01 %
    loss, where most reports say none, one lost datagram there cut the rate 20 % every 3 s).
  * base-RTT probe: a flow that arrives at a buffer TCP keeps full measures that
    queue as its base RTT, sees no queue and takes the drops for random loss. So
    while it sees loss (every 2 s, doubling up to 40 s while probes find nothing;
    the first at once if the loss is 5 % or more, as when it arrives at a full
    buffer) it halves its rate for two RTTs, longer while the RTT keeps falling: if
    the RTT fell, the base was a queue, the rate stays down and FAST now sees the
    queue; if not, the rate comes back. On a random-loss path this costs one RTT's
    worth of sending per probe. Under heavy loss (10 % or more) a probe also comes as the base RTT is
    about to leave its BASE_WINDOW: several transfers whose alphas together pass the buffer keep it at the
    brim, no one's probe alone drains it, and once the window forgot the empty queue every flow saw none and
    climbed to its cap (4 FAIR transfers, 100 Mbit/s, 50 ms, one-BDP buffer: 265 Mbit/s offered, 62 % lost;
    bench.crowd). Their bases were seen at one moment, so these probes come together and drain it (120-138,
    25-29 % lost in two runs: what stays is their alphas' overflow, which no flow can tell from random loss by
    itself).
  * own overflow: a buffer smaller than ``alpha`` never lets FAST reach its queue, so
    FAST alone sends past the link into it (20 Mbit/s, 50 ms, one-BDP buffer: 30x the
    link, 94 % lost). After heavy loss (10 % or more; probes then come every ten RTTs)
    the probe sends half of what arrives; if a queue stood when it began (the loss reported then is of the RTTs
    before: beside BBR, whose ProbeRTT had just emptied the buffer, FAIR had the link a moment), the loss then goes
    away and the flow had the link alone (its delivery rate within 80 % of the best it saw: sharing with TCP,
    sending less ends the overflow too), the queue it saw drained (its least from an RTT into the probe on at most
    the larger of 6 ms and a fifth of the queue when the probe began: alone at half of what arrives, a flow
    drains its own within the probe; one that stays is someone else's: TCP BBR keeps the buffer full, only
    less full while this flow sends less, and heavy loss beside it is then probed no more often than random
    loss) and its base RTT did not fall meanwhile
    (a probe that drains a queue arrived at, CUBIC's, also ends the loss), the loss was its own: the rate stays
    there and, for the session, alpha stays within half of what the buffer held (the queue when the probe began,
    at its brim: a busy host's stall may be the peak; eight
    datagrams at least: loss with no queue, a receiver too busy to read, shows no buffer
    and must not leave FAST without alpha), and loss at that buffer's brim counts as
    congestion (the receiver's loss report follows within an RTT or two for this). Unless a queue then stands for
    ten RTTs while the flow sends under half of the best it saw: that queue is someone else's (a flow that far
    below the link builds none), the verdict was a coincidence (BBR's ProbeRTT emptied the buffer during the
    probe), and the cap goes.
- HIGH is FAIR with 1.5 times the ``alpha`` (the congestion-loss threshold stays FAIR's):
  about 1.5 times a FAIR flow's share. Beside TCP it aims at twice TCP's share (HIGH_SHARE of the
  link): alpha alone took 85 % from one CUBIC flow (100 Mbit/s, 50 ms, one-BDP buffer), because FAST
  refills within a few RTTs the room each back-off of CUBIC leaves, and CUBIC regrows slowly. So once
  congestion loss (measured against HIGH's own alpha: someone else's backlog at the brim) says the link
  is shared, and for BASE_WINDOW after, HIGH keeps what the receiver gets within HIGH_SHARE of the best
  it has seen (the link, when it had it alone) while a queue stands (the link is busy, so what it carries
  beyond this flow's delivery is the others'); with no queue the link has room and FAST climbs as ever.
  Beside TCP BBR, which keeps about its own bandwidth x delay queued and does not yield to loss, a FAST flow
  holds about ``alpha`` / RTprop: FAIR 40 % of 100 Mbit/s at 50 ms, HIGH about half (its queue and BBR's reach
  a one-BDP buffer's brim). Two thirds would take a rate held whatever the loss (without the congestion-loss
  cut HIGH lost 31 % and took less), which two HIGH transfers on one link would each chase into their own loss;
  and no held rate gets it: FIXED at 80-100 Mbit/s beside BBR took 1.5-1.6 times TCP's share and lost 23-36 % of
  what it sent (BBR does not settle at what it is left), and a floor at two thirds of the best delivery seen,
  held against loss, did worse than FAST (engine/TCP 0.6-0.9 at 16-33 % loss).
- LOW is a LEDBAT-like scavenger (RFC 6817): it aims at a queuing delay below
  what FAIR keeps and backs off hard above it, yielding to any other traffic.

``target_kbps`` caps and ``min_kbps`` floors every policy. With ``percent``
(ascp's --auto-detect-capacity) the cap is that percent of the path's capacity
instead, measured once at the start: every policy first runs FAIR's slow start;
when the first queue appears (or the rate reaches ``target_kbps``, then the
ceiling) the rate holds for MEASURE_RTTS base round trips, so that the delivery rate
the receiver reports is the bottleneck's: its mean over the hold is the capacity.
FIXED then sends at exactly the percent, the others stay at or below it. Loss alone
never lowers the rate for longer than a probe (it only corrects the measured delivery rate): 30 % random loss and a
receiver dropping what it cannot take look alike in loss terms, and only the
latter also shows as delay (its queue fills).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from fasp.options.vocabulary import POLICIES

INITIAL_BPS = 10_000_000
ALPHA_BYTES = 250_000  # FAIR's standing queue per flow on paths up to 100 ms; twice that from 200 ms
HIGH_GAIN = 1.5  # HIGH's alpha over FAIR's
HIGH_SHARE = 2 / 3  # of a link HIGH shares with TCP: twice what it leaves
GAMMA = 0.25  # FAST's smoothing per RTT
SLOW_START_GAIN = 0.69  # growth per RTT before the first queue (compounded per feedback: e**0.69 = 2x per RTT)
REGAIN = 0.25  # growth per RTT while no queue builds, back to the known delivery rate; beyond it ...
PROBE_GAIN = 0.1  # ... this (FAST alone adds only alpha per RTT: slow on long fat paths) ...
REGAIN_HEADROOM = 1.5  # ... up to this many times the delivery rate (which follows the rate while the path has room)
CLOCKED_HEADROOM = 1.1  # ... or this many on paths of CLOCKED_RTT or more: the climb is heard of an RTT late, and 1.5
# let a cap above a 500 Mbit/s x 200 ms link reach 1.2x it and a queue of a third of an RTT even with the window
LOW_TARGET_DELAY = 0.004  # LOW's queuing delay target (seconds), at least; RTT/20 on long paths
BASE_WINDOW = 10.0  # seconds over which the propagation RTT is the minimum sample
MEASURE_RTTS = 3  # round trips the rate holds above the bottleneck to measure it (percent mode) ...
MEASURE_MIN = 0.1  # ... and seconds at least: the mean of a bursty delivery rate needs a while
MEASURE_SHORT = 0.9  # a hold whose delivery rate came within this of what the sender sent meanwhile found no
# bottleneck: a queue that was a busy host's scheduling delay (107 ms read at 10 Mbit/s through a 40 Mbit/s link, and
# the capacity measured at 6.8), so the rate doubles and holds again
CAP_WATCH_RTTS = 2.0  # slow start at the cap watches this many RTTs for the queue it may overflow
CEILING_KBPS = 10_000_000  # the engine's own cap, e.g. over an --auto-detect-capacity percent
QUEUE_SLACK = 1.5  # a queue peak beyond this many times the flow's own alpha is someone else's backlog too ...
OWN_CLIMB = 2 * PROBE_GAIN  # ... or beyond its alpha and this fraction of its rate x RTT, if that is more (the
# climb's tenth per RTT, heard of two RTTs late; at up to 100 Mbit/s x 50 ms it is never more)
LOSS_BACKOFF = 0.2  # the cut per RTT on congestion loss (loss at a standing queue near its peak)
PROBE_DEPTH = 0.5  # a base-RTT probe sends at this fraction of the rate ...
PROBE_RTTS = 2.0  # ... for this many round trips, so a queue this flow feeds drains (more while the RTT
PROBE_MAX_RTTS = 8.0  # falls, up to this many)
PROBE_GAP = 2.0  # seconds between probes while losing; doubles while probes find nothing
PROBE_GAP_MAX = 4 * BASE_WINDOW
ARRIVAL_LOSS = 0.05  # loss this heavy probes at once (a flow arriving at a full buffer), lighter loss waits PROBE_GAP
OWN_LOSS = 0.5  # a probe after heavy loss that sees less than this fraction of it: the loss was this flow's own
BUFFER_SHARE = 0.5  # ... overflow, and alpha stays within this share of what the buffer holds, ...
ALPHA_FLOOR = 8 * 1500 * 8  # ... never under eight full datagrams (bits): a queue too short to see is no buffer
QUEUE_SEEN = 0.002  # seconds: a queue that peaked lower was never seen (its loss may be anyone's)
HELD_SHARE = 0.2  # a queue still this much of what it was when a probe began, at its least from an RTT in, ...
HELD_MIN = 0.006  # ... and this long at least (a busy host's delay is a few ms) is someone else's: a flow alone
# sending half of what arrives drains its own within the probe (it lasts two RTTs: twice the queue at least)
ALONE = 0.8  # a delivery rate this close to the best seen when a probe begins: the flow has the link alone
THEIRS_RATE = 0.5  # a queue of HELD_MIN or more while the flow sends under this fraction of the best it saw ...
THEIRS_RTTS = 10.0  # ... for this many RTTs is someone else's: alpha's cap by an own-overflow verdict goes
HEAVY_LOSS = 0.1  # loss this heavy is probed every HEAVY_GAP_RTTS (PROBE_GAP at most) whatever probes find
HEAVY_GAP_RTTS = 10.0
RANDOM_LOSS_SLACK = 2.0  # loss beyond this many times the path's least recent loss may be congestion
TRAIN_S = 0.02  # FAIR's and HIGH's first data goes at the cap for this long (see the train above) ...
TRAIN_BYTES = 1_250_000  # ... and this many bytes at most (20 ms at 500 Mbit/s): what a slow link loses of it
TRAIN_RTT = 0.1  # ... and this fraction of an RTT (a tenth of the cap x RTT: a one-BDP buffer takes it unless
# the cap is ten times the link) ...
TRAIN_MIN_RTT = 0.1  # ... on paths this long or longer: on shorter ones slow start's doubling is soon done, and
# a train at a cap ten times the link overflows a one-BDP buffer (its loss, read as the path's, then lets FAST
# double a 20 Mbit/s, 50 ms link's rate into a 62 KB buffer for a second)
TRAIN_SPREAD = 0.6  # a train that arrives slower than this fraction of its sending rate met the bottleneck (its
# reports of a 500 Mbit/s link said 390-470 when it went at 500)
TRAIN_MARGIN = 0.015  # its reports are in once this long past its end plus an RTT (a few 5 ms reports late)
HOLD_RTTS, HOLD_MAX = 2.0, 2.0  # a set target is held after the train until its reports are in, or this many of
# the RTTs it was started with (seconds at most) if they never come: a receiver that sends no RTT samples (or only
# late ones) is no licence to send at the cap for the whole session
FLOOD_RTTS = 1.0  # a set target's flood is reported out once RTT samples echo data sent this many RTTs after the
# queue it built drained (the receiver's loss fraction spans its last LOSS_HORIZON datagrams, and halves each RTT
# past its least) ...
FLOOD_MAX_RTTS = 8.0  # ... and this many RTTs after it at most (a queue someone else keeps is no flood's)
CLOCKED_RTT = 0.04  # on paths this long or longer FAIR's rate is a window over the RTT: it falls at once as a
# queue grows, as TCP's self-clocking does, and FAST's smoothing moves the window. Its reply to a queue its climb built
# comes an RTT late and took four more RTTs at a quarter of the way per RTT: at 500 Mbit/s x 200 ms with a cap above
# the link the queue grew to 100-200 ms, where light random loss read as congestion. Beside one CUBIC flow (50 ms)
# FAIR then takes about half, not 60 %. On shorter paths the host's few ms of delay noise are a tenth of the RTT or
# more and the rate would follow the noise (10 ms with up to 10 ms of it: 73 % of the link, 82 % unclocked)
FALLING = 0.005  # a probe lasts an RTT more while the loss reported keeps falling (by more than this, or
# this fraction of it: not the noise of a random loss)


@dataclass
class RateSettings:
    target_kbps: int  # cap (kilobits/s); -l. With ``percent``: the ceiling above the percent (a server's cap)
    min_kbps: int = 0  # floor; -m (kilobits/s in both modes)
    policy: str = "fair"  # "fixed" | "high" | "fair" | "low"
    percent: int = 0  # --auto-detect-capacity: the cap is this percent (1..100) of the measured capacity
    start_at_target: bool = False  # the target was set (-l, aspera.conf): FAIR's and HIGH's initial rate (below)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}")
        if self.target_kbps <= 0 or self.min_kbps < 0:
            raise ValueError("target rate must be > 0 and min rate >= 0")
        if not 0 <= self.percent <= 100:
            raise ValueError(f"capacity percent {self.percent} is not within 1..100")


class WindowedMin:
    """Minimum of the samples of the last ``window`` seconds (monotonic deque)."""

    def __init__(self, window: float):
        self.window = window
        self._q: deque[tuple[float, float]] = deque()

    def push(self, now: float, value: float) -> float:
        q = self._q
        while q and q[-1][1] >= value:
            q.pop()
        q.append((now, value))
        while q[0][0] < now - self.window:
            q.popleft()
        return q[0][1]

    def since(self) -> float:
        """When the sample that is the minimum now came (the window forgets it ``window`` after)."""
        return self._q[0][0] if self._q else float("-inf")


class WindowedMax(WindowedMin):
    """Maximum of the samples of the last ``window`` seconds."""

    def push(self, now: float, value: float) -> float:
        return -super().push(now, -value)


class RateController:
    """Decides the sending rate (bits/s) from RTT samples and the receiver's reports."""

    def __init__(self, settings: RateSettings, now: float = 0.0):
        self.settings = settings
        self.capacity_bps: float | None = None  # measured (percent mode only)
        self.rate_bps = float(min(settings.target_kbps * 1000, max(INITIAL_BPS, settings.min_kbps * 1000)))
        if settings.policy == "fixed" and not self.measuring:
            self.rate_bps = self.cap_bps
        self._base = WindowedMin(BASE_WINDOW)
        self._standing = WindowedMin(0.01)
        self._delivered = WindowedMax(0.1)
        self._peaks = WindowedMax(BASE_WINDOW)
        self._peak_delay = 0.0  # the largest queuing delay of the last BASE_WINDOW ...
        self._peaks_after = 0.0  # ... counted from then: slow start's aftermath (its own overshoot is no one else's
        # backlog, and the loss average, which set out from 0, has settled; a train ends slow start an RTT after the
        # first data)
        self._cut_at = -1e9  # when congestion loss last cut the rate
        self._probe_gap = PROBE_GAP
        self._probed = self._probe_first = False
        self._next_probe = 0.0  # set when slow start ends
        self._probe_end: float | None = None  # while probing: when it ends ...
        self._probe_from = self._probe_base = 0.0  # ... the rate and base RTT before it, the rate during it
        self._probe_rate = self._probe_recv = 0.0  # (and what arrived and the queue when it began)
        self._probe_queue = 0.0
        self._probe_least = 0.0  # the least queue since the probe's lower rate took effect (an RTT in)
        self._probe_started = 0.0
        self._probe_low = self._probe_limit = 0.0  # the lowest base RTT it found so far, its longest end
        self._random_loss = WindowedMin(0.5)  # the least _loss_avg of the last ten RTTs since slow start
        self._loss_avg = 0.0  # the loss reported, averaged over about an RTT ...
        self._probe_loss_before = 0.0  # ... when the probe began, and the least the probe saw (from its second
        self._probe_loss = 0.0  # RTT on, once the reports show its lower rate)
        self._shared_at = -1e9  # HIGH: when congestion loss last showed someone else's backlog beyond its alpha
        self._alpha_cap = float("inf")  # bits of queue the bottleneck's buffer leaves this flow (set by overflow)
        self._theirs_since: float | None = None  # capped: since when a queue stands that is not this flow's
        self._recv_avg = self._recv_raw = 0.0  # the receive rate over about an RTT: loss added back, as is ...
        self._recv_best = 0.0  # ... and the best of the latter this session: about the bottleneck's when alone
        self.base_rtt: float | None = None
        self.srtt: float | None = None
        self.queue_delay = 0.0
        self._slow_start = True
        self._holding_since: float | None = None  # percent mode: when the rate stopped growing to measure
        self._capped_at: float | None = None  # slow start: when the rate reached the cap
        self._held_bits = self._held_time = 0.0  # what arrived since then, and over how long ...
        self._held_from = 0.0  # ... counted from an RTT in (the reports before tell of what went before the hold)
        self._held_sent: int | None = None  # ... and the bytes sent when the hold began (pace's ``sent``)
        self._sent: int | None = None  # the bytes sent so far, as pace last heard (None: it never did)
        self._last = now
        self._clock_rtt = 0.0  # the RTT FAST's last update saw: its rate is a window over the RTT (below)
        # the train: FAIR's and HIGH's first data at the cap (start_train), judged from the reports of it
        self._train_pending = True  # until the first data (start_train)
        self._train_end: float | None = None  # while it goes or its reports come: when it ends ...
        self._train_from = 0.0  # ... while it goes, the rate after it (before it, or a set target; 0 otherwise)
        self._hold_until, self._hold_after = 0.0, 0.0  # ... a set target held: until when at most, then what rate
        self._train_start, self._train_sent = 0.0, 0  # when it began, the bytes sent by then ...
        self._train_rate = 0.0  # ... and once it ended, the rate it went at
        self._train_rates: list[float] = []  # ... the delivery rates reported since it ended ...
        self._train_estimate = 0.0  # the rate its reports showed (the bottleneck's, or the cap's) ...
        self._train_clear = False  # ... and whether it went near the cap and arrived as fast: a clear path
        self._flooded: float | None = None  # a set target held above the bottleneck: when its queue last stood,
        # until the RTT samples echo data sent FLOOD_RTTS after that (the loss reported until then is the flood's)
        self._flood_limit = 0.0  # ... or FLOOD_MAX_RTTS after it ended, at most

    @property
    def measuring(self) -> bool:
        """Percent mode, capacity not known yet: slow start runs whatever the policy."""
        return bool(self.settings.percent) and self.capacity_bps is None

    def trains(self, rtt: float | None) -> bool:
        """Whether a session of these settings starts with a train on a path of ``rtt`` (FAIR and HIGH, not while
        measuring the capacity, TRAIN_MIN_RTT or more): both ends hold the session's settings, so a receiving end
        knows whether one may come."""
        return self.settings.policy in ("fair", "high") and not self.measuring and (rtt or 0.0) >= TRAIN_MIN_RTT

    @property
    def cap_bps(self) -> float:
        """The rate no policy exceeds: target_kbps, or once measured the percent of the capacity (raised to
        min_kbps: the floor is absolute in both modes)."""
        s = self.settings
        cap = float(s.target_kbps * 1000)
        if s.percent and self.capacity_bps is not None:
            cap = min(cap, max(s.percent / 100 * self.capacity_bps, s.min_kbps * 1000))
        return cap

    def set_settings(self, settings: RateSettings) -> None:
        """New caps or policy; a measured capacity stays (a new percent applies to it at once)."""
        self.settings = settings
        self._train_pending, self._train_end = False, None  # a train in flight ends: the new caps rule
        if self._train_from:
            self.rate_bps, self._train_from = self._train_from, 0.0
        if settings.policy == "fixed" and not self.measuring:
            self.rate_bps = self.cap_bps
        self._clamp()

    def _clamp(self) -> None:
        self.rate_bps = min(max(self.rate_bps, self.settings.min_kbps * 1000, 1000.0), self.cap_bps)

    def _capped(self, now: float) -> float:
        """When slow start reached the cap (now, the first time asked)."""
        if self._capped_at is None:
            self._capped_at = now
        return self._capped_at

    def start_train(self, now: float, rtt: float | None, sent: int) -> None:
        """The first data goes now: on a path of TRAIN_MIN_RTT or more (``rtt``: measured, or the control
        channel's), FAIR and HIGH send it at the cap for a short train (see the module's docstring); :meth:`pace`
        ends it. ``sent``: the bytes sent so far (here and in :meth:`pace`: what the train sent)."""
        if not self._train_pending:
            return
        self._train_pending = False
        if not self.trains(rtt) or self.cap_bps <= self.rate_bps or not self._slow_start:
            return
        assert rtt is not None
        self._train_from = self.cap_bps if self.settings.start_at_target else self.rate_bps
        self._train_start = now
        self._train_end = now + min(TRAIN_S, TRAIN_RTT * rtt, TRAIN_BYTES * 8 / self.cap_bps)
        if self.settings.start_at_target:
            self._hold_until = self._train_end + min(HOLD_RTTS * rtt, HOLD_MAX) + TRAIN_MARGIN
            self._hold_after = self.rate_bps
        self._train_sent = sent
        self.rate_bps = self.cap_bps

    def pace(self, now: float, sent: int) -> float:
        """The rate to pace at now (bits/s): a train's cap until it ends, then the rate it started from (the cap
        still, when the target was set: it is the initial rate)."""
        self._sent = sent
        end = self._train_end
        if self._train_from and end is not None and now >= end:
            self.rate_bps, self._train_from = self._train_from, 0.0
            self._train_rate = (sent - self._train_sent) * 8 / max(now - self._train_start, 1e-3)
        if self._hold_until and now >= self._hold_until:  # no report judged the train: slow start as without
            self._hold_until = 0.0
            if end is not None:
                self.rate_bps = self._hold_after
        return self.rate_bps

    def _judge_train(self, now: float, recv_rate_bps: float, srtt: float) -> None:
        """Collect the delivery rates reported while the train arrives; once they are in, slow start goes
        on from the rate the bottleneck spread it to (the mean of the reports of at least half the best one:
        a report the train filled only in part says less, one a burst of late reads filled says more)."""
        assert self._train_end is not None
        self._train_rates.append(recv_rate_bps)
        if now < self._train_end + srtt + TRAIN_MARGIN:
            return
        best = max(self._train_rates)
        spread = [r for r in self._train_rates if r >= best / 2]
        self._train_end, self._train_rates = None, []
        if not self._slow_start or best <= 0:
            return
        rate = self._train_estimate = min(sum(spread) / len(spread), self.cap_bps)
        if rate < TRAIN_SPREAD * self._train_rate:  # it arrived slower than it went: the bottleneck's rate
            # (doubling on would only flood it)
            self.rate_bps = self._end_slow_start(rate, rate)
            if self.settings.start_at_target:
                # a set target held above the link for an RTT: the loss of that flood, reported for an RTT and its
                # queue more, is this flow's own, neither congestion nor a full buffer it arrived at (2x a
                # 100 Mbit/s, 200 ms link: read so, it cut the rate, then probed it to a fifth for 0.6 s); a full
                # buffer's loss goes on, and is probed PROBE_GAP later
                self._flooded, self._flood_limit, self._probed = now, now + FLOOD_MAX_RTTS * srtt, True
        else:
            self.rate_bps = max(self.rate_bps, rate)
            # it went near the cap (not a first file too small to fill it) and arrived as fast: the path was clear
            self._train_clear = self._train_rate >= TRAIN_SPREAD * self.cap_bps

    def _end_slow_start(self, rate: float, delivered: float) -> float:
        """Restart from the delivery rate (BBR-style); in percent mode it is the capacity."""
        self._slow_start = False
        self._peaks, self._peaks_after = WindowedMax(BASE_WINDOW), self._last + 2 * (self.srtt or 0.0)
        # or at once after heavy loss (on_feedback): a full buffer. A train that arrived as fast as it went met
        # no one's standing queue: the base RTT is the path's until BASE_WINDOW may have made it stale
        self._next_probe = self._last + (BASE_WINDOW if self._train_clear else PROBE_GAP)
        if delivered > 0:
            rate = min(rate, delivered)
        if self.measuring:
            self.capacity_bps = delivered or rate
            if self.settings.policy == "fixed":
                rate = self.cap_bps
        return rate

    def _probe(self, now: float, rate: float, loss: float, base_rtt: float, srtt: float) -> float | None:
        """The rate while a base-RTT probe runs, else None. A flow that arrives at a buffer another flow keeps
        full sees that queue as its base RTT and the tail drop as random loss; so while losing it halves its
        rate now and then for a few RTTs, longer while the RTT keeps falling (a slow flow drains a full buffer
        slowly): if the RTT fell, the base was a queue (FAST now sees it and the rate stays down), if not the
        loss is random and the rate comes back. If instead the loss went away at the lower rate, it was this
        flow's own overflow: a buffer too small for its alpha (FAST aims at ``alpha`` queued and would send at
        twice the link into a buffer that holds half of it: on 20 Mbit/s, 50 ms with a one-BDP buffer, 94 % of
        what it sent was lost). The rate stays down and alpha stays within half of what the buffer held."""
        if self._probe_end is None:
            first = not self._probed and loss >= ARRIVAL_LOSS  # a buffer full when this flow came
            # heavy loss, and the base RTT is about to be forgotten: see it again first (below)
            stale = self._loss_avg >= HEAVY_LOSS and now - self._base.since() >= BASE_WINDOW - PROBE_RTTS * srtt
            if loss <= 0.0 or (now < self._next_probe and not first and not stale):
                return None
            self._probed, self._probe_first = True, first
            self._probe_end, self._probe_from, self._probe_base = now + PROBE_RTTS * srtt, rate, base_rtt
            self._probe_recv, self._probe_queue, self._probe_least = self._recv_raw, self.queue_delay, float("inf")
            self._probe_rate = PROBE_DEPTH * min(rate, self._recv_raw)  # below what arrives: a queue of its own drains
            self._probe_low, self._probe_limit = base_rtt, now + PROBE_MAX_RTTS * srtt
            self._probe_started, self._probe_loss_before, self._probe_loss = now, self._loss_avg, self._loss_avg
        if base_rtt < self._probe_low - 0.001:  # still draining: wait an RTT more
            self._probe_low, self._probe_end = base_rtt, max(self._probe_end, now + srtt)
        if now - self._probe_started >= srtt:  # the reports show the lower rate
            self._probe_least = min(self._probe_least, self.queue_delay)
            if loss < self._probe_loss:
                if loss < self._probe_loss - max(FALLING, FALLING * self._probe_loss):  # still falling: an RTT more
                    self._probe_end = max(self._probe_end, now + srtt)
                self._probe_loss = loss
        if now < min(self._probe_end, self._probe_limit):
            return self._probe_rate
        self._probe_end = None
        # the base RTT fell: the probe drained a queue this flow had taken for the path (it arrived at a buffer
        # someone else keeps full, and its loss was theirs as much as its own)
        drained = base_rtt < self._probe_base - max(0.002, 0.05 * self._probe_base)
        # a queue seen that stayed while this flow sent half of what arrives: someone else keeps it (TCP BBR). Its
        # least from an RTT into the probe on (a busy host's few ms of delay at its end read as a queue held, and the
        # flow then flooded a buffer smaller than alpha for seconds), against HELD_MIN and the queue when the probe
        # began: not the peak, which a host's stall inflates (487 ms beside a 50 ms buffer), nor half of what was
        # there: BBR, paced at its estimate, let its queue drain from 49 to 13 ms meanwhile
        seen = self._peak_delay >= QUEUE_SEEN
        least = min(self._probe_least, self.queue_delay)
        held = seen and least > max(HELD_MIN, HELD_SHARE * self._probe_queue)
        own = (
            self._probe_loss_before >= HEAVY_LOSS
            and self._probe_loss < OWN_LOSS * self._probe_loss_before
            and 0 < self._probe_recv >= ALONE * self._recv_best  # (sharing the bottleneck, a flow that sends what
            and not drained  # arrives ends the overflow too, but then it gets less than the link: not its own
            and self._probe_queue >= QUEUE_SEEN  # buffer to cap); a queue stood when the probe began (the loss it
            # reports is that of the RTTs before: beside BBR, whose ProbeRTT had just emptied the buffer, FAIR had the
            # link alone a moment and its alpha was capped at 76 KB), and its queue drained
            and not held
        )
        if own:  # the queue was at the buffer's brim: what it held then is all this flow may keep there (the
            # standing queue when the probe began, or less: the peak may be a busy host's stall, 175 ms against a
            # 25 ms buffer, and alpha was capped at 109 KB, more than that buffer holds)
            brim = min(self._peak_delay, self._probe_queue)
            self._alpha_cap = min(self._alpha_cap, max(BUFFER_SHARE * brim * self._probe_rate, ALPHA_FLOOR))
        if own or drained:
            self._probe_gap, self._cut_at = PROBE_GAP, now
            rate = self._probe_rate
        else:
            rate = self._probe_from
            # random loss: probe less often; not after heavy loss (an overdrive may hide in it) nor after the
            # arrival probe (slow start's own overshoot may have misled it)
            # nor an overdrive when someone else kept the queue full
            if held or (not self._probe_first and self._probe_loss_before < HEAVY_LOSS):
                self._probe_gap = min(2 * self._probe_gap, PROBE_GAP_MAX)
        heavy = max(self._probe_loss_before, self._loss_avg) >= HEAVY_LOSS and not (own or held)  # an overdrive
        self._next_probe = now + (min(self._probe_gap, HEAVY_GAP_RTTS * srtt) if heavy else self._probe_gap)
        return rate

    def _revisit_cap(self, now: float, srtt: float) -> None:
        """Lift alpha's cap once a queue stands for THEIRS_RTTS while this flow sends under THEIRS_RATE of the best
        it saw: a flow that far below the link builds no queue of its own, so the buffer is someone else's and the
        own-overflow verdict was a coincidence (beside TCP BBR, whose ProbeRTT emptied the buffer during the probe:
        the queue went, the loss too; HIGH then kept 15 Mbit/s beside BBR's 40 ms queue for the rest of a run, 4 of
        21 bench runs). An overflow that is this flow's own comes back and is probed again."""
        theirs = self.queue_delay >= HELD_MIN and self.rate_bps < THEIRS_RATE * self._recv_best
        if not theirs or self._alpha_cap == float("inf"):
            self._theirs_since = None
        elif self._theirs_since is None:
            self._theirs_since = now
        elif now - self._theirs_since >= THEIRS_RTTS * srtt:
            self._alpha_cap, self._theirs_since = float("inf"), None

    def _congestion_loss(self, loss: float, random_loss: float, alpha: float) -> bool:
        """Loss is congestion when it passes twice the path's ``random_loss`` and meets a standing queue near its
        recent peak, and that peak holds more than this flow's own alpha (tail drop at a full buffer someone else
        fills too); random loss on a path whose only queue is this flow's own (or none) is not."""
        return (
            loss > RANDOM_LOSS_SLACK * random_loss
            and self.queue_delay >= 0.5 * self._peak_delay
            and self._peak_delay * self.rate_bps > self._own_queue(alpha)
        )

    def _own_queue(self, alpha: float) -> float:
        """The most queue (bits) this flow's own climb and FAST's lag may stand at: QUEUE_SLACK x ``alpha``, or
        ``alpha`` and OWN_CLIMB of the path's rate x RTT on a long fat path, whose queue an RTT late is larger."""
        return max(QUEUE_SLACK * alpha, alpha + OWN_CLIMB * self.rate_bps * (self.base_rtt or 0.0))

    def _high_share(self, now: float, rate: float, g: float, shared: bool) -> float:
        """HIGH beside a flow that fills the buffer (``shared``: congestion loss beyond HIGH's own alpha, now
        or in the last BASE_WINDOW): while a queue stands, the receiver's rate is brought within HIGH_SHARE of
        the best it saw (at FAST's pace), leaving the other flow a third; FAST alone took 85 % from CUBIC."""
        if shared:
            self._shared_at = now
        share = HIGH_SHARE * self._recv_best
        if now - self._shared_at < BASE_WINDOW and self.queue_delay >= QUEUE_SEEN and self._recv_raw > share:
            rate = min(rate, self.rate_bps * (1 - g * (1 - share / self._recv_raw)))
        return rate

    def on_rtt(self, now: float, rtt: float) -> None:
        """A round-trip sample (seconds)."""
        self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
        self.base_rtt = self._base.push(now, rtt)
        self._standing.window = max(0.5 * self.srtt, 0.01)
        standing = self._standing.push(now, rtt)
        self.queue_delay = max(0.0, standing - self.base_rtt)
        if self._flooded is not None:
            if self.queue_delay > HELD_MIN:  # the flood's queue still drains
                self._flooded = now
            if now - rtt >= self._flooded + FLOOD_RTTS * rtt or now >= self._flood_limit:
                self._flooded = None  # the reports now tell of what was sent after the flood
        if now < self._peaks_after:  # this flow's own slow-start overshoot draining: no one else's backlog
            self._peak_delay = self.queue_delay
        else:
            self._peak_delay = self._peaks.push(now, self.queue_delay)

    def on_feedback(self, now: float, recv_rate_bps: float, loss: float = 0.0, span: float | None = None) -> None:
        """The receiver's report: update the rate. ``loss`` only corrects the receive rate for what was lost.
        ``span``: the seconds the report's rate covers by the receiver's clock, if known (else since the last)."""
        dt, self._last = now - self._last, now
        if self._train_from:  # the train goes: no report can tell of it yet (it lasts a fraction of an RTT)
            return
        policy = self.settings.policy
        measuring = self.measuring
        srtt, base_rtt = self.srtt, self.base_rtt  # on_rtt sets both at once
        if (policy == "fixed" and not measuring) or srtt is None or base_rtt is None:
            self._clamp()
            return
        if self._train_end is not None:
            self._judge_train(now, recv_rate_bps, srtt)
        if self._flooded is not None:  # the flood's own overflow
            loss = 0.0
        rtt = max(base_rtt + self.queue_delay, 1e-4)
        rtts = min(1.0, dt / max(srtt, 1e-3))  # how much of an RTT this update covers
        g = GAMMA * rtts
        # the receive rate averaged over about an RTT (a backlog drained after a stall is no capacity),
        # then the best of the last ten RTTs
        # (counting what random loss took on the way, so it lowers no estimate of capacity)
        arrived = recv_rate_bps / (1.0 - min(loss, 0.5))
        self._recv_avg += min(1.0, rtts) * (arrived - self._recv_avg)
        self._loss_avg += min(1.0, rtts) * (loss - self._loss_avg)
        self._recv_raw += min(1.0, rtts) * (recv_rate_bps - self._recv_raw)
        self._recv_best = max(self._recv_best, self._recv_raw)
        self._delivered.window = self._random_loss.window = max(10 * srtt, 0.5)
        delivered = self._delivered.push(now, self._recv_avg)
        rate = self.rate_bps
        queued = rate * self.queue_delay  # bits this flow keeps in the bottleneck queue
        if policy == "low" and not measuring:  # its target stays under FAIR's standing queue (alpha/rate)
            target = max(LOW_TARGET_DELAY, base_rtt / 20)
            off = max(-1.0, min(1.0, (target - self.queue_delay) / target))
            rate *= 1.0 + g * off
        else:
            # flows on one path see one base RTT, hence one alpha: FAST's fairness holds; longer paths
            # get more slack for the RTT noise they carry
            fair_alpha = ALPHA_BYTES * 8 * min(max(base_rtt / 0.1, 1.0), 2.0)
            alpha = min(fair_alpha * (HIGH_GAIN if policy == "high" else 1), self._alpha_cap)
            if self._slow_start:
                # (at the cap there is nothing to grow to: a full buffer met on arrival shows no queue)
                queue = rate * self.queue_delay >= alpha / 2
                growing = not queue and rate < self.cap_bps
                if measuring and (self._holding_since is not None or not growing):
                    # hold above the bottleneck: the mean delivery rate meanwhile is its capacity (loss is
                    # not added back: the queue this builds may overflow, and that loss is congestion)
                    if self._holding_since is None:
                        self._holding_since, self._held_bits, self._held_time = now, 0.0, 0.0
                        self._held_from, self._held_sent = now + srtt, self._sent
                    elif now > self._held_from:  # (each report weighs the span it covers: what arrived)
                        weight = dt if span is None or not 0 < span < 1.0 else span
                        self._held_bits += recv_rate_bps * weight
                        self._held_time += weight
                    if now - self._held_from >= max(MEASURE_RTTS * base_rtt, MEASURE_MIN):
                        held = self._held_bits / max(self._held_time, 1e-9)
                        sent = (
                            rate  # (a driver that never told pace what went: the rate held)
                            if self._sent is None or self._held_sent is None
                            else (self._sent - self._held_sent) * 8 / max(now - self._holding_since, 1e-9)
                        )
                        if held >= MEASURE_SHORT * sent and rate < self.cap_bps:
                            # all that went arrived: no bottleneck held it back (the sent rate, not the pacing's:
                            # a descheduled sender sends less)
                            rate, self._holding_since = min(2 * rate, self.cap_bps), None
                        else:
                            rate = self._end_slow_start(rate, held)
                elif growing:
                    rate *= 1.0 + SLOW_START_GAIN * rtts
                elif not queue and now - self._capped(now) < CAP_WATCH_RTTS * srtt:
                    pass  # at the cap: a queue it overflows shows only an RTT or more later; watch for it
                else:  # restart from what the bottleneck delivers now (the smoothed figure lags a doubling
                    # rate, and a train's jump: it measured the bottleneck); at the cap with no queue the path has
                    # room for it: keep the rate
                    arrived = max(delivered, recv_rate_bps, self._train_estimate)
                    rate = self._end_slow_start(rate, arrived if queue else 0.0)
            elif (probing := self._probe(now, rate, loss, base_rtt, srtt)) is not None:
                rate = probing
            else:
                self._revisit_cap(now, srtt)
                clocked = base_rtt >= CLOCKED_RTT
                if self._clock_rtt and clocked:  # a window's self-clocking
                    rate *= self._clock_rtt / rtt
                self._clock_rtt = rtt
                fast = rate * base_rtt / rtt + alpha / rtt
                rate = min((1 - g) * rate + g * fast, rate * (1 + g))
                recent_cut = now - self._cut_at < self._delivered.window
                # (the loss average set out from 0 an RTT or two ago: until it settles, its least is no random loss)
                random_loss = self._random_loss.push(now, self._loss_avg) if now >= self._peaks_after else 1.0
                congested = self._congestion_loss(loss, random_loss, min(fair_alpha, self._alpha_cap))
                if congested and now - self._cut_at >= srtt:
                    rate, self._cut_at, recent_cut = rate * (1 - LOSS_BACKOFF), now, True
                if queued < alpha / 4 and not recent_cut:  # no queue: the path has room
                    gain = REGAIN if self.rate_bps < 0.9 * delivered else PROBE_GAIN
                    headroom = CLOCKED_HEADROOM if clocked else REGAIN_HEADROOM
                    rate = max(rate, min(self.rate_bps * (1 + gain * rtts), headroom * delivered))
                if policy == "high":  # (HIGH's alpha is at least the one above: this implies ``congested``)
                    rate = self._high_share(now, rate, g, self._congestion_loss(loss, random_loss, alpha))
        if self._slow_start or self._probe_end is not None or policy == "low":
            self._clock_rtt = 0.0  # (FAST's window starts from the rate it finds)
        self.rate_bps = rate
        self._clamp()
