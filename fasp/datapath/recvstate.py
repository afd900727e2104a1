"""Receiving side of the data channel (sans-IO): which bytes are missing, and what to tell the sender.

The receiver writes every datagram straight to its offset, so it keeps no
reordering buffer, only a hole map per file: a frontier (the highest byte seen)
and the sorted ranges still missing below it. Feedback, sent several times per
round trip, carries for each active file the frontier (every file's within a round
trip, however many holes wait), the holes old enough not to be mere reordering
(those not reported within the last round trip first, when not all fit), and
completion; and for the session the receive rate and
the fraction of the peer's datagrams that never arrived (from sequence gaps).

The receiving session asks for bytes (pieces) ahead of their arrival; how many the path needs asked for at
once is :meth:`ReceiveState.window_bytes`: the delivery rate measured here times the RTT, with room for the
rate to double within a round trip, for the holes loss leaves waiting for their resend, and, on a lossy path,
for the requests' own TCP stalling on a lost segment.
"""

from __future__ import annotations

import bisect
import itertools
import math

from fasp.datapath import datagram
from fasp.datapath.rate import WindowedMax

REORDER_GRACE = 0.003  # seconds a hole must persist before it is reported (floor; scaled by RTT)
MAX_FEEDBACK_BYTES = 1200  # FEEDBACK body size cap (smaller if the datagram size is; -X changes it)
MIN_FEEDBACK_BYTES = (
    datagram.FEEDBACK_HEAD_SIZE + datagram.FILE_REPORT_SIZE + datagram.HOLE_SIZE
)  # one file, one range: 47
COMPLETE_REPEATS = 3  # feedbacks that repeat a completion (more follow whenever data for it arrives)
LOSS_HORIZON = 2000  # datagrams over which the loss fraction is measured at most ...
LOSS_MIN_HORIZON = 100  # ... and at least: older evidence halves each round trip (so the report follows a rate
# change within an RTT or two, as FAIR's probe needs) unless it is this little
WINDOW_FLOOR = 8 << 20  # bytes asked for before the path is measured (one file's 16 pieces of 512 KiB before)
WINDOW_CAP = 512 << 20  # bytes asked for at most: 2 x 10 Gbit/s x 200 ms; bounds the pieces held at once
RATE_AVERAGING = 2.0  # the delivery rate behind the window is averaged over 1/RATE_AVERAGING of an RTT
WINDOW_GAIN = 2.0  # the window over rate x RTT: the rate may double within a round trip (FAIR's slow start does)


def feedback_limit(room: int, retransmission_max: int = 0) -> int:
    """The FEEDBACK body cap for ``room`` bytes of datagram body: ascp's -X (the largest retransmission
    request) if given, else MAX_FEEDBACK_BYTES; never above the room, and never below MIN_FEEDBACK_BYTES
    (a smaller request could carry no range at all, so -X below 47 means 47)."""
    wanted = retransmission_max or MAX_FEEDBACK_BYTES
    return min(room, max(wanted, MIN_FEEDBACK_BYTES))


class HoleMap:
    """Bytes of [start, end) received so far, as a frontier plus holes below it."""

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.frontier = start
        self._starts: list[int] = []  # hole starts, sorted
        # (start, end, first_seen, last reported) parallel to _starts
        self._holes: list[tuple[int, int, float, float]] = []
        self.missing = end - start

    @property
    def complete(self) -> bool:
        return self.missing == 0

    def add(self, offset: int, length: int, now: float) -> int:
        """Record bytes [offset, offset+length); return how many of them are new."""
        if offset == self.frontier and offset + length <= self.end:  # in order: the common case
            self.frontier = offset + length
            self.missing -= length
            return length
        lo = max(offset, self.start)
        hi = min(offset + length, self.end)
        if lo >= hi:
            return 0
        new = 0
        frontier = self.frontier
        if hi > frontier:
            if lo > frontier:
                self._starts.append(frontier)
                self._holes.append((frontier, lo, now, -math.inf))
            new = hi - max(lo, frontier)
            self.frontier = hi
            if lo >= frontier:
                self.missing -= new
                return new
            hi = frontier
        new += self._fill(lo, hi)
        self.missing -= new
        return new

    def _fill(self, lo: int, hi: int) -> int:
        starts, holes = self._starts, self._holes
        i = bisect.bisect_right(starts, lo) - 1
        if i < 0:
            i = 0
        filled = 0
        while i < len(holes):
            a, b, seen, told = holes[i]
            if a >= hi:
                break
            if b <= lo:
                i += 1
                continue
            filled += min(b, hi) - max(a, lo)
            pieces: list[tuple[int, int, float, float]] = []
            if a < lo:
                pieces.append((a, lo, seen, told))
            if hi < b:
                pieces.append((hi, b, seen, told))
            holes[i : i + 1] = pieces
            starts[i : i + 1] = [p[0] for p in pieces]
            i += len(pieces)
        return filled

    def holes(self, older_than: float, limit: int, now: float = 0.0, again_after: float = 0.0) -> list[tuple[int, int]]:
        """Up to ``limit`` holes first seen before ``older_than`` and not reported within ``again_after`` of
        ``now``, lowest first; they count as reported now. Their resends are on the way: reporting the lowest
        ``limit`` each time recovered only ``limit`` holes per round trip, and 3 % loss at 500 Mbit/s, 200 ms
        opens about 250 per round trip."""
        due: list[tuple[int, int]] = []
        holes = self._holes
        for i, (a, b, seen, told) in enumerate(holes):
            if len(due) >= limit:
                break
            if seen <= older_than and now - told >= again_after:
                due.append((a, b))
                holes[i] = (a, b, seen, now)
        return due

    def reported(self, older_than: float, limit: int, now: float, again_after: float) -> list[tuple[int, int]]:
        """Up to ``limit`` of the holes :meth:`holes` leaves out for having been reported within ``again_after``,
        lowest first: they fill a report's spare room (a lost report then costs nothing)."""
        recent = ((a, b) for a, b, seen, told in self._holes if seen <= older_than and 0 < now - told < again_after)
        return list(itertools.islice(recent, limit))


class ReceiveState:
    """All incoming files of one session, plus the loss/rate measurement and feedback schedule."""

    def __init__(self, max_feedback_bytes: int = MAX_FEEDBACK_BYTES):
        self.max_feedback_bytes = max_feedback_bytes  # FEEDBACK body cap (see feedback_limit)
        self._files: dict[int, HoleMap] = {}
        self._completed: set[int] = set()
        self._announce: dict[int, int] = {}  # completed file_id -> feedbacks still to announce it in
        self._touched: set[int] = set()  # files that received data since the last feedback
        self._rotor = 0  # where the next feedback starts its round of file reports
        self.unknown_datagrams = 0
        # loss and rate over the current feedback interval
        self._seq_high = -1
        self._interval_seq_base = -1
        self._interval_count = 0
        self._interval_bytes = 0
        self._interval_start: float | None = None
        self._expected = 0.0
        self._got = 0.0
        self._loss_halved = 0.0  # when the loss evidence last halved
        self.loss = 0.0
        self.recv_rate_bps = 0.0
        self._rate_avg = 0.0
        self._best_rate = WindowedMax(0.5)  # the best _rate_avg of the last ten RTTs (0.5 s at least)
        self.best_rate_bps = 0.0
        self.urgent = False  # a completion is waiting to be announced
        self._data_seq = 0  # the newest DATA processed (0: none; each end's first datagram is its hello or ack)
        self._data_at = 0.0  # when it was

    def window_bytes(self, rtt: float | None, hole_wait: float, held_bps: float = 0.0) -> int:
        """Bytes the receiving session may have asked for and not yet received: WINDOW_GAIN x the best recent
        delivery rate x (``rtt`` + the loss fraction x ``hole_wait``, how long a hole waits for its resend),
        within [WINDOW_FLOOR, WINDOW_CAP]. Asking for less than rate x RTT caps the rate at window / RTT; the gain
        lets a window-bound rate double each round trip until the sender's own rate is the bound. ``held_bps``:
        a rate the sender holds whatever is measured (FIXED's target), so its window needs no measuring first
        (from a floor below rate x RTT a FIXED start was window-bound for three round trips at 500 Mbit/s, 200 ms).

        On a lossy path the window holds ``hole_wait`` more of the rate: the requests themselves travel by TCP
        (the SSH session) over the same path, and a lost segment holds every request behind it until TCP resends
        it, about 1.25 RTT later (RACK) or an RTO. Without that much queued at the sender, FIXED at 500 Mbit/s,
        200 ms, 1 % ran dry for 30-100 ms about once a second (442 Mbit/s in the data phase, 462 with it)."""
        if rtt is None:
            return WINDOW_FLOOR
        rate_Bps = max(self.best_rate_bps, held_bps) / 8
        wanted = rate_Bps * (WINDOW_GAIN * (rtt + self.loss * hole_wait) + (hole_wait if self.loss else 0.0))
        return int(min(max(wanted, WINDOW_FLOOR), WINDOW_CAP))

    def register(self, file_id: int, start: int, end: int) -> None:
        self._completed.discard(file_id)
        self._announce.pop(file_id, None)
        self._files[file_id] = HoleMap(start, end)
        if start >= end:
            self._complete(file_id)

    def unregister(self, file_id: int) -> None:
        self._files.pop(file_id, None)
        self._completed.discard(file_id)
        self._announce.pop(file_id, None)

    def is_complete(self, file_id: int) -> bool:
        return file_id in self._completed

    @property
    def active(self) -> bool:
        """Files are arriving, or completions are still to be announced."""
        return bool(self._files) or bool(self._announce)

    def _complete(self, file_id: int) -> None:
        del self._files[file_id]
        self._completed.add(file_id)
        self._announce[file_id] = COMPLETE_REPEATS
        self.urgent = True

    def on_datagrams(self, count: int, size: int, seq_high: int) -> None:
        """Account authenticated datagrams from the peer (for loss and receive rate): how many, their
        total size, and the highest sequence number among them."""
        if seq_high > self._seq_high:
            self._seq_high = seq_high
        self._interval_count += count
        self._interval_bytes += size

    def on_data(self, file_id: int, offset: int, length: int, now: float, seq: int = 0) -> int:
        """Record a DATA datagram (``seq``: its full sequence number); return how many bytes are new (write the
        payload iff > 0)."""
        self._data_seq, self._data_at = seq, now
        hm = self._files.get(file_id)
        if hm is None:
            if file_id in self._completed:  # the sender missed the announcements: say it again
                self._announce[file_id] = max(self._announce.get(file_id, 0), 1)
                self.urgent = True
            else:
                self.unknown_datagrams += 1
            return 0
        new = hm.add(offset, length, now)
        self._touched.add(file_id)
        if hm.missing == 0:
            self._complete(file_id)
        return new

    def feedback(self, now: float, rtt: float, train: bool = False) -> datagram.Feedback:
        """The report to send now; resets the interval measurements. ``train``: a sender's train may be arriving
        (the first data): its rate counts unaveraged (it lasts a fraction of an RTT), so the window lets the sender
        go on at that rate at once."""
        span = self._seq_high - self._interval_seq_base
        if span > 0:  # loss over roughly the last LOSS_HORIZON datagrams
            self._expected += span
            self._got += min(self._interval_count, span)
            if self._expected > LOSS_HORIZON or (self._expected > LOSS_MIN_HORIZON and now - self._loss_halved >= rtt):
                self._expected /= 2
                self._got /= 2
                self._loss_halved = now
            self.loss = max(0.0, 1.0 - self._got / self._expected)
        if self._interval_start is not None and now > self._interval_start:
            dt = now - self._interval_start
            self.recv_rate_bps = self._interval_bytes * 8 / dt
            # averaged over half an RTT (a burst is no rate; a window-bound start grows each RTT),
            # then the best of the last ten RTTs
            self._rate_avg += min(1.0, RATE_AVERAGING * dt / max(rtt, 1e-3)) * (self.recv_rate_bps - self._rate_avg)
            if train:
                self._rate_avg = max(self._rate_avg, self.recv_rate_bps)
            self._best_rate.window = max(10 * rtt, 0.5)
            self.best_rate_bps = self._best_rate.push(now, self._rate_avg)
        self._interval_seq_base = self._seq_high
        self._interval_count = 0
        self._interval_bytes = 0
        self._interval_start = now
        self.urgent = False

        room = self.max_feedback_bytes - datagram.FEEDBACK_HEAD_SIZE
        reports = []
        for file_id, left in list(self._announce.items()):
            if room < datagram.FILE_REPORT_SIZE:
                break
            reports.append(datagram.FileReport(file_id, 0, [], True))
            room -= datagram.FILE_REPORT_SIZE
            if left > 1:
                self._announce[file_id] = left - 1
            else:
                del self._announce[file_id]
        older_than = now - max(REORDER_GRACE, rtt / 16)
        started = sorted(self._touched | {f for f, h in self._files.items() if h.frontier > h.start})
        first = self._rotor % len(started) if started else 0  # more files than fit take turns
        # every file's frontier within a round trip, however many holes (one left unreported for round trips had
        # its sender resend the file's tail): in turn, as many as half the room holds, then their holes due, then
        # more files with theirs as room allows, then holes reported lately in the room left
        files = [(file_id, hm) for file_id in started[first:] + started[:first] if (hm := self._files.get(file_id))]
        n = min(len(files), room // datagram.FILE_REPORT_SIZE, max(1, room // 2 // datagram.FILE_REPORT_SIZE))
        room -= n * datagram.FILE_REPORT_SIZE  # the first n reports' heads, paid for up front
        told: list[tuple[int, HoleMap, list[tuple[int, int]]]] = []
        for i, (file_id, hm) in enumerate(files):
            head = 0 if i < n else datagram.FILE_REPORT_SIZE
            if room < head:
                break
            holes = hm.holes(older_than, (room - head) // datagram.HOLE_SIZE, now, rtt)
            told.append((file_id, hm, holes))
            room -= head + datagram.HOLE_SIZE * len(holes)
        self._rotor += len(told)
        for file_id, hm, holes in told:
            more = hm.reported(older_than, room // datagram.HOLE_SIZE, now, rtt)
            room -= datagram.HOLE_SIZE * len(more)
            reports.append(datagram.FileReport(file_id, hm.frontier, sorted(holes + more)))
        self._touched.clear()
        age = int((now - self._data_at) * 1_000_000) if self._data_seq else 0
        return datagram.Feedback(int(self.recv_rate_bps / 1000), self.loss, reports, self._data_seq, age)
