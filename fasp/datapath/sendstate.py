"""Sending side of the data channel (sans-IO): what to send next, and when a file is done.

Retransmissions go first, then new data, files in the order they were added.
A hole the receiver reports is resent at once; it is resent again only once
the receiver has seen data sent after that resend (``seen``, dated by the
feedback, RACK-style) and still misses it, or after two retransmission
timeouts (``rto``, given by the driver). A resend waiting in a long receive
queue is thus not repeated, so each loss costs about one resend.

Loss at the very end of a file leaves no hole behind it. Its part beyond the
receiver's frontier is resent as soon as the receiver has seen data sent after
that end (other files keep the channel busy, so this takes one round trip), or
else once all of the file was sent and ``rto`` passes without confirmation (if
nothing is missing then, a zero-length probe asks the receiver to report
again). A file is done when the receiver says so.

Both rules need data sent after the lost datagram. When the sender falls silent (its last burst
went, nothing is queued), nothing follows that burst: a loss in it would wait for ``rto`` (a tail) or
two (a resend), rounds of ~0.7 s at 200 ms that ended every lossy transfer. So, as TCP's tail loss
probe, the burst's last chunk goes once more ``TAIL_PROBE_GAP`` later: the receiver then has seen
data sent after the burst, and its next report gets what is still missing resent within a round trip.
And once no file has new data left, room no new data wants carries a second copy of each resend: a
lost resend no longer costs a round trip of its own (at 3 % loss the last round trips' resends lost
one nearly every time). Room still left carries a second copy of the newest data the receiver has not
reported, newest first: a loss among the last round trip's data cost a round trip after it (its report,
then the resend), and the link sat idle meanwhile. The copies walk down while the reports walk up, so they
cover the last half round trip's data and the transfer ends half a round trip sooner on a lossy path
(only when the receiver reports loss: a clean path needs no copies). Not under heavy loss
(``COPY_LOSS_MAX``): that is a full queue more likely than chance, and copies would feed it. ``copied``
counts the bytes spent so.
"""

from __future__ import annotations

import math

from fasp.datapath import datagram

REORDER_MARGIN = 0.002  # seconds by which later data must have overtaken a resend before it counts as lost
TAIL_PROBE_GAP = 2.5 * REORDER_MARGIN  # seconds of silence after a burst before its last chunk goes again
COPY_LOSS_MAX = 0.05  # copies bet that loss is light and random: heavier loss is a full queue they would feed


class OutFile:
    __slots__ = (
        "file_id",
        "start",
        "end",
        "next_new",
        "recv_high",
        "last_send",
        "sent_all_at",
        "retx_times",
        "progress_key",
        "last_progress",
        "probe_sent",
        "copy_next",
        "acked",
    )

    def __init__(self, file_id: int, start: int, end: int, now: float):
        self.file_id = file_id
        self.start = start
        self.end = end
        self.next_new = start
        self.recv_high = start
        self.last_send = now
        self.sent_all_at: float | None = None  # when the last new chunk went out
        self.retx_times: dict[int, float] = {}  # chunk offset -> when it was last resent
        self.progress_key = (start, -1)
        self.last_progress = now
        self.probe_sent = start < end  # an empty file still needs one (zero-length) datagram
        self.copy_next: int | None = None  # the next chunk (by index) a tail copy goes for, walking down; -1: done
        self.acked = 0  # bytes the receiver reported: below recv_high, less the holes it told (never less than before)


class SendState:
    """All outgoing files of one session."""

    def __init__(self, payload_size: int):
        if payload_size <= 0:
            raise ValueError("datagram too small for any payload")
        self.payload_size = payload_size
        self._files: dict[int, OutFile] = {}
        self._retx: dict[tuple[int, int], int] = {}  # (file_id, offset) -> length, queued for resending
        self._last: tuple[int, int, int] | None = None  # the latest burst's last chunk, until it is probed
        self._last_at = 0.0
        self.copied = 0  # payload bytes sent as second copies and tail probes (part of what was resent)
        self.loss = 0.0  # the loss the receiver last reported (copies only below COPY_LOSS_MAX)
        self._heard_at = -math.inf  # when the latest report came

    def resize(self, payload_size: int) -> None:
        """Chunks of ``payload_size`` from now on (the path's datagram size changed); queued resends larger
        than that are split, so none outgrows the new size."""
        self.payload_size = payload_size
        if any(n > payload_size for n in self._retx.values()):
            retx: dict[tuple[int, int], int] = {}
            for (file_id, off), n in self._retx.items():
                for lo in range(off, off + n, payload_size):
                    retx[(file_id, lo)] = min(payload_size, off + n - lo)
            self._retx = retx

    def add(self, file_id: int, start: int, end: int, now: float) -> None:
        if file_id in self._files:
            raise ValueError(f"file {file_id} is already being sent")
        self._files[file_id] = OutFile(file_id, start, end, now)

    def remove(self, file_id: int) -> None:
        if self._files.pop(file_id, None) is not None:
            for key in [k for k in self._retx if k[0] == file_id]:
                del self._retx[key]

    @property
    def has_data(self) -> bool:
        """Something is ready to go now (queued resends, unsent new data, or tail copies)."""
        if self._retx:
            return True
        copies = self._tail_copies
        return any(
            f.next_new < f.end or not f.probe_sent or (copies and f.copy_next != -1) for f in self._files.values()
        )

    @property
    def _tail_copies(self) -> bool:
        """Room no new data wants goes to tail copies: the receiver reports loss, and not heavy loss."""
        return 0 < self.loss < COPY_LOSS_MAX

    @property
    def probe_at(self) -> float | None:
        """When the tail probe goes if nothing is sent before (None: no burst awaits one)."""
        return None if self._last is None else self._last_at + TAIL_PROBE_GAP

    def probe_due(self, now: float) -> bool:
        """The tail probe may go now (:meth:`next_chunks` sends it when nothing else is ready)."""
        at = self.probe_at
        return at is not None and now >= at

    @property
    def busy(self) -> bool:
        """Some file awaits confirmation."""
        return bool(self._files)

    def _queue(self, f: OutFile, lo: int, hi: int, now: float, rto: float, seen: float | None = None) -> None:
        size = self.payload_size
        times = f.retx_times
        off = lo
        while off < hi:
            n = min(size, hi - off)
            t = times.get(off)
            if t is None or now - t >= 2 * rto or (seen is not None and seen > t + REORDER_MARGIN):
                self._retx[(f.file_id, off)] = n
            off += n

    def on_feedback(
        self,
        fb: datagram.Feedback,
        now: float,
        rto: float,
        seen: float | None = None,
        acked: list[tuple[int, int]] | None = None,
    ) -> list[int]:
        """Apply a receiver report; return the ids of files it confirms complete.

        ``seen`` is when the newest datagram the receiver had processed was sent (None: unknown). ``acked``
        gets (file id, :attr:`OutFile.acked`) for each incomplete file whose acknowledged bytes grew: upload
        progress, told per report rather than per datagram (a hole still too young to be told counts as
        received until it is; the complete file's count is exact)."""
        done = []
        self.loss = fb.loss
        self._heard_at = now
        for rep in fb.files:
            f = self._files.get(rep.file_id)
            if f is None:
                continue
            if rep.complete:
                done.append(rep.file_id)
                self.remove(rep.file_id)
                continue
            if rep.recv_high > f.recv_high:
                f.recv_high = min(rep.recv_high, f.end)
            key = (f.recv_high, sum(b - a for a, b in rep.holes))
            if key != f.progress_key:
                f.progress_key = key
                f.last_progress = now
                if acked is not None and f.recv_high - f.start - key[1] > f.acked:
                    f.acked = f.recv_high - f.start - key[1]
                    acked.append((f.file_id, f.acked))
            for a, b in rep.holes:
                self._queue(f, max(a, f.start), min(b, f.next_new), now, rto, seen)
            if (
                f.recv_high < f.end
                and f.sent_all_at is not None
                and seen is not None
                and seen > f.sent_all_at + REORDER_MARGIN
            ):  # later data arrived, the tail did not
                self._queue(f, f.recv_high, f.end, now, rto, seen)
        return done

    def poll(self, now: float, rto: float) -> None:
        """Resend the unconfirmed tail of files fully sent more than ``rto`` ago, once the receiver reported after
        that send (:meth:`_heard_since`)."""
        for f in self._files.values():
            if f.next_new < f.end or now - f.last_send < rto or not self._heard_since(f):
                continue
            if f.recv_high < f.end:
                self._queue(f, f.recv_high, f.end, now, rto)
            else:  # all seen, yet unconfirmed: a zero-length probe makes the receiver report again
                f.probe_sent = False
            f.last_send = now

    def _heard_since(self, f: OutFile) -> bool:
        """The receiver reported after ``f`` last went: a receiver silent since (its host busy elsewhere) is late,
        not lossy, and resending to it only lengthens its queue. Resent on the timer regardless, 8 KiB files
        through the relay on a loaded host went 0 to 37 % of their bytes again."""
        return self._heard_at > f.last_send

    def stalled(self, now: float, timeout: float) -> list[int]:
        """Files without progress for ``timeout`` since their first byte went out: one still waiting for its
        turn behind others (the receiver does not report it yet) is not stalled, whatever the rate."""
        return [
            f.file_id
            for f in self._files.values()
            if now - f.last_progress > timeout and not (f.start < f.end and f.next_new == f.start)
        ]

    def next_chunks(self, budget: int, now: float, max_chunks: int = 256) -> list[tuple[int, int, int, bool]]:
        """Up to ``budget`` link bytes (IP and UDP headers too) of (file_id, offset, length, is_resend), resends
        first."""
        out: list[tuple[int, int, int, bool]] = []
        overhead = datagram.WIRE_OVERHEAD
        files = self._files
        while self._retx and budget > 0 and len(out) < max_chunks:
            (file_id, off), n = next(iter(self._retx.items()))
            del self._retx[(file_id, off)]
            f = files.get(file_id)
            if f is None:
                continue
            f.retx_times[off] = now
            f.last_send = now
            out.append((file_id, off, n, True))
            budget -= n + overhead
        resent = len(out)
        size = self.payload_size
        for f in files.values():
            if budget <= 0 or len(out) >= max_chunks:
                break
            if not f.probe_sent:
                f.probe_sent = True
                f.last_send = now
                out.append((f.file_id, f.start, 0, False))
                budget -= overhead
                continue
            off, end = f.next_new, f.end
            while off < end and budget > 0 and len(out) < max_chunks:
                n = min(size, end - off)
                out.append((f.file_id, off, n, False))
                off += n
                budget -= n + overhead
            if off != f.next_new:
                if f.next_new == f.start:  # the stall clock starts with the first byte sent: a piece queued
                    f.last_progress = now  # behind others (8 MiB of them at a low rate) has not stalled (40)
                f.next_new = off
                f.last_send = now
                if off == end:
                    f.sent_all_at = now
        # room left means no new data is left: it carries a second copy of each resend
        if resent and budget > 0 and len(out) < max_chunks and self.loss < COPY_LOSS_MAX:
            for chunk in out[: min(resent, max_chunks - len(out))]:
                out.append(chunk)
                self.copied += chunk[2]
                budget -= chunk[2] + overhead
                if budget <= 0:
                    break
        if budget > 0 and len(out) < max_chunks and self._tail_copies:
            budget = self._copy_tail(out, budget, now, max_chunks)
        if out:
            file_id, off, n, _ = out[-1]
            self._last, self._last_at = ((file_id, off, n) if n else None), now
        elif self._last is not None and self.probe_due(now) and budget > 0:
            file_id, off, n = self._last
            self._last = None  # once per burst: a probe is no burst of its own
            f = files.get(file_id)
            if f is not None:
                f.retx_times[off] = now
                out.append((file_id, off, n, True))
                self.copied += n
        return out

    def _copy_tail(self, out: list[tuple[int, int, int, bool]], budget: int, now: float, max_chunks: int) -> int:
        """Second copies of the newest chunks the receiver has not reported (above its frontier), newest file
        first and each file from its end down, each chunk once; returns the budget left."""
        size, overhead = self.payload_size, datagram.WIRE_OVERHEAD
        for f in reversed(self._files.values()):
            if budget <= 0 or len(out) >= max_chunks:
                break
            k = f.copy_next
            if k == -1 or f.next_new < f.end:
                continue
            if k is None:
                k = (f.end - f.start - 1) // size
            while k >= 0 and budget > 0 and len(out) < max_chunks:
                lo = f.start + k * size
                hi = min(f.end, lo + size)
                if hi <= f.recv_high:  # reported: a loss below is a hole, and its report has it resent
                    k = -1
                    break
                k -= 1
                if lo in f.retx_times:  # resent already (and copied then)
                    continue
                f.retx_times[lo] = now
                f.last_send = now
                out.append((f.file_id, lo, hi - lo, True))
                self.copied += hi - lo
                budget -= hi - lo + overhead
            f.copy_next = k
        return budget
