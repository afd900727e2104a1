"""One end of the UDP data channel as a sans-IO connection (aioquic's manner): datagrams and time in,
datagrams, one timer and events out.

Above the codec, seal, send/receive state and rate controller, the connection owns what is decided over time:
the handshake, RTT samples from echoed timestamps, the retransmission timeout, pacing (the rate controller's rate
as a token bucket: when the next datagram may go), feedback and keepalives, the watchdogs (a silent peer, a
stalled file), the peer's address (learned from its first authenticated datagram; strangers are rejected) and
the datagram size (fixed by ``-Z``, else found by path MTU discovery, :mod:`fasp.datapath.pmtu`).
It holds no socket, file or clock: a driver (:mod:`fasp.datapath.udpchannel`) feeds
:meth:`Connection.receive_datagrams` and :meth:`Connection.handle_timer` with ``now``, sends what
:meth:`Connection.datagrams_to_send` returns, sleeps until :meth:`Connection.get_timer`, writes what a
:class:`DataReceived` event says, and answers a sending file's :data:`PieceReader` ("the bytes at this offset").
The sender sends what it was asked for as fast as the pacing allows; what is in flight is decided by the
receiving session, which asks for up to :meth:`Connection.window_bytes` (measured rate × RTT, with room) at once.
"""

from __future__ import annotations

import collections
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from fasp.datapath import datagram, pmtu
from fasp.datapath.datagram import Buffer
from fasp.datapath.pmtu import PathMtu
from fasp.datapath.rate import CEILING_KBPS, RateController, RateSettings
from fasp.datapath.recvstate import ReceiveState, feedback_limit
from fasp.datapath.seal import Rejected, Seal
from fasp.datapath.sendstate import SendState
from faspmanager.codes import EngineError, ErrorCode

Address = Any  # a socket address as the driver's socket gives it (compared for equality only)
PieceReader = Callable[[int, int, bool], Buffer]
"""Bytes [lo, hi) of a file being sent (``resend``: a retransmission); raises EngineError if the source fails."""

DEFAULT_RATE = RateSettings(target_kbps=CEILING_KBPS, policy="fair")
FEEDBACK_MIN, FEEDBACK_MAX = 0.005, 0.05  # a receiver reports every eighth of an RTT within these (a sending end
# that receives nothing, every FEEDBACK_MAX: its reports are RTT samples only) ...
TRAIN_WATCH = 0.1  # ... and every FEEDBACK_MIN this long from its first DATA if a FAIR or HIGH sender's train
# (rate.TRAIN_S) may be arriving, spread to the bottleneck's rate: the sender takes that rate from these reports
KEEPALIVE = 0.5  # seconds between datagrams when otherwise silent (the peer's liveness signal)
TICK = 0.001  # pacing granularity: the shortest wait for tokens (the event loop's timers have 1 ms steps)
BURST = 0.01  # seconds of rate the token bucket may save up (covers a late timer), at most ...
BURST_RTT = 0.25  # ... and this fraction of the RTT, two TICKs at least: a short path's buffer is short (the
# bench's 64 packets are 1.5 ms at 500 Mbit/s), and what a late timer saved up, sent at once, overflowed it: at RTT 0
# FIXED offered 1.6 times the file for 310 Mbit/s. Long paths keep the 10 ms (a one-BDP buffer takes it)
CATCH_UP = 0.1  # what a late wake lost beyond that (as much again, at most) is paid back this fraction above the
# rate: a link the sender keeps full idles while the host is busy, and TCP's kernel sends on through an app's stall.
# 10,000 files of 8 KiB at 100 Mbit/s: ~300 late wakes lost 0.15-0.21 s of 7.1 s (FIXED held 97.6 % of the link).
# Only while the peer reports no loss: at 500 Mbit/s, RTT 0 the 64-packet buffer is shorter than the burst, and
# paying back there sent 1.31 times the file for 347 Mbit/s (1.13 for 425 without)
CHUNKS_PER_ROUND = 64  # datagrams built per datagrams_to_send call, so the driver's reading is not starved
SEND_ROUNDS_KEPT = 1 << 14  # when each send round began (its first seq): feedback names DATA by seq (seconds of it)
WATCHDOG_PERIOD = 1.0  # the longest the timer sleeps: watchdogs and the sender's tail poll look this often
HELLO_FIRST_GAP, HELLO_MAX_GAP = 0.05, 1.0  # hello retransmission backs off from the first to the second
STALL_TIMEOUT = 20.0  # seconds without progress before a send counts as stalled (code 40)
PEER_TIMEOUT = 10.0  # seconds without any datagram before the peer counts as gone (code 16)
MASK32 = 0xFFFFFFFF


def usec(now: float) -> int:
    """The wire's 32-bit microsecond timestamp of ``now``."""
    return int(now * 1_000_000) & MASK32


# ---- events (what the driver must act on) -------------------------------------------------------------


@dataclass(slots=True)
class DataReceived:
    """Adjacent payloads of one file, bytes [offset, end), to write; ``new`` of them were not seen before."""

    file_id: int
    offset: int
    end: int
    payloads: list[memoryview]
    new: int


@dataclass(frozen=True, slots=True)
class ReceiveComplete:
    """Every byte of an expected file arrived (reported after its last DataReceived)."""

    file_id: int


@dataclass(frozen=True, slots=True)
class SendComplete:
    """The receiver confirmed all of a file."""

    file_id: int


@dataclass(frozen=True, slots=True)
class SendProgress:
    """The receiver reported more of a file: ``acked`` bytes of it so far (after its start)."""

    file_id: int
    acked: int


@dataclass(frozen=True, slots=True)
class SendStalled:
    """No progress on a file for ``seconds``; it is no longer sent."""

    file_id: int
    seconds: float


@dataclass(frozen=True, slots=True)
class SendFailed:
    """A file's PieceReader failed; it is no longer sent."""

    file_id: int
    error: EngineError


@dataclass(frozen=True, slots=True)
class FeedbackReceived:
    """The peer's report on what it receives: its delivery rate and the loss it measures."""

    recv_rate_kbps: int
    loss: float


@dataclass(frozen=True, slots=True)
class CapacityMeasured:
    """Percent mode measured the path (once)."""

    kbps: int


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """The listener answered our hello."""


@dataclass(frozen=True, slots=True)
class PeerAddressLearned:
    address: Address


@dataclass(frozen=True, slots=True)
class PeerTimedOut:
    """Nothing from the peer for ``seconds`` while work was pending (reported once per silence)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class PeerClosed:
    code: int


Event = (
    DataReceived
    | ReceiveComplete
    | SendComplete
    | SendProgress
    | SendStalled
    | SendFailed
    | FeedbackReceived
    | CapacityMeasured
    | HandshakeCompleted
    | PeerAddressLearned
    | PeerTimedOut
    | PeerClosed
)


class Connection:
    """One end of a session's data channel; either end can send and receive files.

    ``seal`` fixes the direction: 1 listens (the peer's address is learned), 0 connects to ``peer``
    (call :meth:`connect`). ``datagram_size`` 0 discovers the path's (the driver reports what the kernel
    refuses, :meth:`datagram_refused`). ``now`` is the driver's monotonic clock, as every later ``now``."""

    def __init__(
        self,
        seal: Seal,
        peer: Address | None,
        datagram_size: int,
        rate: RateSettings | None,
        now: float,
        *,
        peer_timeout: float = PEER_TIMEOUT,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        if datagram_size and not datagram.DATA_OVERHEAD < datagram_size <= pmtu.MAX_DATAGRAM:
            raise EngineError(ErrorCode.USAGE, f"datagram size {datagram_size} out of range")
        self._pmtu = None if datagram_size else PathMtu()
        self.datagram_size = self._pmtu.size if self._pmtu is not None else datagram_size
        self.peer_timeout = peer_timeout
        self.stall_timeout = stall_timeout
        self._seal = seal
        self._peer = peer
        self._rate = RateController(rate or DEFAULT_RATE, now)
        self._sender = SendState(self.datagram_size - datagram.DATA_OVERHEAD)
        self._receiver = ReceiveState(feedback_limit(self._feedback_room))
        self._readers: dict[int, PieceReader] = {}  # files being sent
        self._expected: set[int] = set()  # files being received
        self._filled: set[int] = set()  # files a run of the current batch brought new bytes to
        self._events: collections.deque[Event] = collections.deque()
        self._out: list[tuple[bytes, Address]] = []  # control datagrams due now
        self._closed = False
        self._hello_at: float | None = None  # when the next hello goes (connecting only)
        self._hello_gap = HELLO_FIRST_GAP
        self._peer_ts: int | None = None  # the peer's latest control datagram's ts, and when it came
        self._sent_at: collections.deque[tuple[int, float]] = collections.deque(maxlen=SEND_ROUNDS_KEPT)
        self._peer_ts_at = 0.0
        self._last_heard = now
        self._last_sent = 0.0
        self._serviced_at = now
        self._next_feedback = now
        self._tokens = 0.0
        self._token_time = now
        self._owed = 0.0  # bytes of sending a late wake lost (CATCH_UP)
        self._behind = False  # the last round left DATA waiting for tokens (or for the next round), not for a window
        self._peer_loss = 0.0
        self._feedback_ts: int | None = None  # the peer's clock (header ts) on its last FEEDBACK
        self._control_rtt: float | None = None  # the control channel's round trip, until ours is measured
        self._data_from: float | None = None  # when the first DATA arrived
        self._counters = {
            "bytes_sent": 0,
            "bytes_retransmitted": 0,
            "datagrams_rejected": 0,
            "datagrams_sent": 0,
            "datagrams_received": 0,
        }

    # ---- calls from the session ---------------------------------------------------------------------

    @property
    def _feedback_room(self) -> int:
        return self.datagram_size - datagram.CONTROL_HEADER_SIZE - datagram.TAG_SIZE

    @property
    def peer(self) -> Address | None:
        return self._peer

    @property
    def rate_settings(self) -> RateSettings:
        return self._rate.settings

    def connect(self, now: float) -> None:
        """Start the handshake: hellos until the listener answers (HandshakeCompleted)."""
        self._hello_at = now

    def set_retransmission_max(self, size: int) -> None:
        """ascp's -X: the largest retransmission request (a FEEDBACK body), 0 for the engine's choice."""
        self._receiver.max_feedback_bytes = feedback_limit(self._feedback_room, size)

    def set_rate(self, rate: RateSettings) -> None:
        self._rate.set_settings(rate)
        self._resize()

    def charge(self, nbytes: int) -> None:
        """The session sent ``nbytes`` to the peer another way (its control channel, as the link carries them):
        they share the path with DATA, so the pacer counts them. Beside FIXED at a link's rate, 10,000 files' offers
        (0.9 % of the link) overflowed its buffer once late wakes no longer left that room (CATCH_UP)."""
        self._tokens -= nbytes

    def control_rtt(self, rtt: float) -> None:
        """A round trip the session measured over its control channel (the same two hosts): the window's RTT until
        the data channel has measured its own. An uploading client offers its files as the UDP handshake runs,
        so the listener asks for its first pieces before any datagram could echo its time: from the floor
        (8 MiB) a FIXED sender at 500 Mbit/s, 200 ms ran dry 70 ms before the next requests came."""
        self._control_rtt = rtt

    def window_bytes(self) -> int:
        """Bytes the receiving session may have asked for and not yet received: the path's rate x RTT with room
        for growth and for the holes loss leaves (:meth:`ReceiveState.window_bytes`); FIXED's target rate
        counts as measured (both ends hold the session's rate settings), and so does a set target that FAIR or
        HIGH starts at until the first data arrives (then what arrives is measured every 5 ms: the train)."""
        rate = self._rate
        rtt = rate.srtt if rate.srtt is not None else self._control_rtt
        fixed = rate.settings.policy == "fixed" and not rate.measuring
        starting = rate.settings.start_at_target and self._data_from is None and rate.trains(rtt)
        held = rate.cap_bps if fixed or starting else 0.0
        return self._receiver.window_bytes(rtt, self.rto(), held)

    def send_file(self, file_id: int, start: int, end: int, read: PieceReader, now: float) -> None:
        """Send bytes [start, end) as ``file_id``, read through ``read``; SendComplete once confirmed."""
        if end > datagram.MAX_OFFSET:
            raise EngineError(ErrorCode.FILE_TOO_BIG, f"bytes beyond {datagram.MAX_OFFSET} cannot be addressed")
        self._sender.add(file_id, start, end, now)
        self._readers[file_id] = read

    def stop_sending(self, file_id: int) -> None:
        """Forget a file being sent (done, failed or abandoned). Idempotent."""
        self._sender.remove(file_id)
        self._readers.pop(file_id, None)

    def expect_file(self, file_id: int, start: int, end: int) -> None:
        """Accept bytes [start, end) of ``file_id`` (DataReceived, then ReceiveComplete)."""
        self._receiver.register(file_id, start, end)
        self._expected.add(file_id)
        if start >= end:
            self._events.append(ReceiveComplete(file_id))

    def stop_expecting(self, file_id: int, *, abandon: bool) -> None:
        """The session is done with a received file; ``abandon``: unfinished, ignore its bytes from now on."""
        self._expected.discard(file_id)
        if abandon:
            self._receiver.unregister(file_id)

    def close(self, now: float) -> None:
        """Say CLOSE to the peer (twice: it may be lost) and stop. Idempotent."""
        if self._closed:
            return
        if self._peer is not None:
            for _ in range(2):
                self._emit(datagram.CLOSE, datagram.pack_close(0), now)
        self._closed = True

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def stats(self) -> dict[str, Any]:
        s = self._rate.settings
        srtt = self._rate.srtt
        return dict(
            rate_kbps=int(self._rate.rate_bps / 1000),
            target_kbps=s.target_kbps,
            min_kbps=s.min_kbps,
            capacity_kbps=None if self._rate.capacity_bps is None else int(self._rate.capacity_bps / 1000),
            policy=s.policy,
            rtt_ms=round(srtt * 1000, 3) if srtt is not None else None,
            loss=self._peer_loss,
            loss_in=self._receiver.loss,
            datagrams_unknown_file=self._receiver.unknown_datagrams,
            datagram_size=self.datagram_size,
            window_bytes=self.window_bytes(),
            bytes_copied=self._sender.copied,
            **self._counters,
        )

    # ---- input --------------------------------------------------------------------------------------

    def receive_datagram(self, data: Buffer, addr: Address, now: float) -> None:
        self.receive_datagrams([(data, addr)], now)

    def receive_datagrams(self, batch: Iterable[tuple[Buffer, Address]], now: float) -> None:
        """A batch read from the socket: adjacent payloads of a file become one DataReceived."""
        if self._closed:
            return
        on_data, events = self._receiver.on_data, self._events
        unpack_head, head_size, data_type = datagram.DATA_HEAD.unpack_from, datagram.DATA_HEAD.size, datagram.DATA
        max_offset = datagram.MAX_OFFSET
        run: DataReceived | None = None
        accepted = accepted_bytes = 0
        seq_high = -1
        batch = list(batch)
        for (data, addr), opened in zip(batch, self._seal.open_batch([data for data, _ in batch])):
            try:
                if opened is None:
                    raise Rejected("malformed, foreign, forged or replayed")
                type_, seq, ts, echo, body = opened
                if addr != self._peer:
                    # the listener learns its peer from the first authentic datagram; the connector takes
                    # the address that answers its hello (a multi-homed listener may answer from another)
                    if self._peer is not None and (type_ != datagram.HELLO_ACK or self._hello_at is None):
                        raise Rejected("datagram from a stranger")
                    self._peer = addr
                    events.append(PeerAddressLearned(addr))
                accepted += 1
                accepted_bytes += len(data)
                if seq > seq_high:  # not max(): the hot path, a call costs
                    seq_high = seq
                if type_ == data_type:
                    file_id, high, low = unpack_head(body)
                    offset, length = high << 32 | low, len(body) - head_size
                    if offset + length > max_offset:
                        raise datagram.WireError("DATA beyond the largest offset")
                    new = on_data(file_id, offset, length, now, seq)
                    if not new:
                        continue
                    payload = memoryview(body)[head_size:]
                    if run is not None and run.file_id == file_id and run.end == offset:
                        run.end += length
                        run.payloads.append(payload)
                        run.new += new
                    else:
                        if run is not None:
                            self._ran(run)
                        run = DataReceived(file_id, offset, offset + length, [payload], new)
                else:
                    if run is not None:
                        self._ran(run)
                        run = None
                    if echo:
                        self._on_rtt(now, ((usec(now) - echo) & MASK32) / 1_000_000)
                    self._peer_ts, self._peer_ts_at = ts, now
                    self._HANDLERS[type_](self, body, now)
            except (Rejected, datagram.WireError, struct.error):
                self._counters["datagrams_rejected"] += 1
        if run is not None:
            self._ran(run)
        if self._filled:  # after every run of the batch: the run that filled a file's last hole may not be its last
            if self._data_from is None:
                self._data_from = now
            for file_id in self._filled:
                if self._receiver.is_complete(file_id) and file_id in self._expected:
                    self._events.append(ReceiveComplete(file_id))
            self._filled.clear()
        if accepted:
            self._last_heard = now
            self._counters["datagrams_received"] += accepted
            self._receiver.on_datagrams(accepted, accepted_bytes, seq_high)

    def _ran(self, run: DataReceived) -> None:
        """A run of payloads ended; whether it completed its file is asked once the whole batch is out."""
        self._events.append(run)
        self._filled.add(run.file_id)

    def _on_feedback(self, body: bytes, now: float) -> None:
        fb = datagram.parse_feedback(body)
        self._peer_loss = fb.loss
        # the span the report's rate covers, by the reporting end's clock (it reports, then starts a new span): a
        # descheduled end reads reports late and together, and its own clock between them says nothing of theirs
        ts, last, self._feedback_ts = self._peer_ts, self._feedback_ts, self._peer_ts
        span = ((ts - last) & MASK32) / 1_000_000 if ts is not None and last is not None else None
        if self._sender.busy:
            measuring = self._rate.measuring
            self._rate.on_feedback(now, fb.recv_rate_kbps * 1000, fb.loss, span=span)
            if measuring and not self._rate.measuring and self._rate.capacity_bps is not None:
                self._events.append(CapacityMeasured(int(self._rate.capacity_bps / 1000)))
                self._resize()  # the cap follows the capacity now
        self._events.append(FeedbackReceived(fb.recv_rate_kbps, fb.loss))
        seen = self._sent_when(fb.data_seq) if fb.data_seq else None
        if seen is not None:
            self._on_rtt(now, now - seen - fb.data_age / 1_000_000)
        acked: list[tuple[int, int]] = []
        for file_id in self._sender.on_feedback(fb, now, self.rto(), seen, acked):
            self._readers.pop(file_id, None)
            self._events.append(SendComplete(file_id))
        self._events.extend(SendProgress(file_id, n) for file_id, n in acked)

    def _on_rtt(self, now: float, rtt: float) -> None:
        if 0 <= rtt < 60:
            self._rate.on_rtt(now, rtt)

    def _sent_when(self, low: int) -> float | None:
        """When the DATA datagram whose seq ends in ``low`` was sent (None: not known, or no longer); the rounds
        before its own are forgotten (feedback names ever newer datagrams)."""
        seq, rounds = datagram.full_seq(low, self._seal.next_seq), self._sent_at
        while len(rounds) > 1 and rounds[1][0] <= seq:
            rounds.popleft()
        return rounds[0][1] if rounds and rounds[0][0] <= seq < self._seal.next_seq else None

    def _on_hello(self, body: bytes, now: float) -> None:
        datagram.parse_hello(body)
        if self._seal.direction == 1:
            self._emit(datagram.HELLO_ACK, b"", now)

    def _on_hello_ack(self, body: bytes, now: float) -> None:
        if self._hello_at is not None:
            self._hello_at = None
            self._events.append(HandshakeCompleted())

    def _on_close(self, body: bytes, now: float) -> None:
        self._events.append(PeerClosed(datagram.parse_close(body)))

    def _on_probe(self, body: bytes, now: float) -> None:
        size = datagram.CONTROL_HEADER_SIZE + len(body) + datagram.TAG_SIZE
        self._emit(datagram.PROBE_ACK, datagram.pack_probe_ack(size), now)

    def _on_probe_ack(self, body: bytes, now: float) -> None:
        size = datagram.parse_probe_ack(body)
        if self._pmtu is not None and self._pmtu.on_acknowledged(size):
            self._resize()

    _HANDLERS: ClassVar[dict[int, Callable[[Connection, bytes, float], None]]] = {
        datagram.FEEDBACK: _on_feedback,
        datagram.HELLO: _on_hello,
        datagram.HELLO_ACK: _on_hello_ack,
        datagram.CLOSE: _on_close,
        datagram.PROBE: _on_probe,
        datagram.PROBE_ACK: _on_probe_ack,
    }

    # ---- time ---------------------------------------------------------------------------------------

    def _feedback_interval(self) -> float:
        srtt = self._rate.srtt or 0.02
        return min(max(srtt / 8, FEEDBACK_MIN), FEEDBACK_MAX)

    def rto(self) -> float:
        """The retransmission timeout: a tail unconfirmed this long after it went is resent."""
        srtt = self._rate.srtt or 0.1
        return 1.5 * srtt + 2 * self._feedback_interval() + 0.005

    def handle_timer(self, now: float) -> None:
        """Whatever is due by ``now``: watchdogs, hello retransmission, the sender's tail poll (RTO)."""
        self._serviced_at = now
        if self._closed:
            return
        if self._readers or self._expected:
            self._watchdogs(now)
        if self._hello_at is not None and now >= self._hello_at:
            self._emit(datagram.HELLO, datagram.pack_hello(self.datagram_size), now)
            self._hello_at = now + self._hello_gap
            self._hello_gap = min(self._hello_gap * 2, HELLO_MAX_GAP)
        if self._sender.busy:
            self._sender.poll(now, self.rto())

    def _watchdogs(self, now: float) -> None:
        if now - self._last_heard > self.peer_timeout:
            self._events.append(PeerTimedOut(self.peer_timeout))
            self._last_heard = now  # report once; later operations get a fresh window
            return
        for file_id in self._sender.stalled(now, self.stall_timeout):
            self.stop_sending(file_id)
            self._events.append(SendStalled(file_id, self.stall_timeout))

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` and :meth:`datagrams_to_send` have something to do next (None: closed)."""
        if self._closed:
            return None
        now = self._serviced_at
        if self._out or (self._peer is not None and self._receiver.urgent):
            return now
        at = now + WATCHDOG_PERIOD
        if self._hello_at is not None:
            at = min(at, self._hello_at)
        if self._sender.busy:
            at = min(at, now + self.rto() / 2)
        if self._peer is not None:
            if self._sender.has_data or self._sender.probe_due(now):
                deficit = -self._tokens
                at = min(
                    at,
                    self._token_time
                    if deficit < 0
                    else self._token_time + max(TICK, deficit * 8 / self._rate.rate_bps),
                )
            elif (probe := self._sender.probe_at) is not None:
                at = min(at, probe)
            if self._receiver.active or self._sender.busy:
                at = min(at, self._next_feedback)
            prober = self._prober()
            if prober is not None:
                due = prober.due(self.rto())
                if due is not None:
                    at = min(at, max(due, now))
            at = min(at, self._last_sent + KEEPALIVE)
        return at

    # ---- output -------------------------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """What may go now: control datagrams, DATA as the pacing allows (one round), feedback or a keepalive."""
        out, self._out = self._out, []
        if self._closed or self._peer is None:
            return out
        rate, rtt, sent = self._rate, self._rate.srtt or self._control_rtt, self._counters["bytes_sent"]
        if self._sender.has_data:  # the first data: FAIR's train (once)
            rate.start_train(now, rtt, sent)
        rate_Bps = rate.pace(now, sent) / 8
        burst = min(max(BURST_RTT * rtt, 2 * TICK), BURST) if rtt is not None else BURST
        self._earn(now, rate_Bps, max(rate_Bps * burst, 4 * self.datagram_size))
        if self._tokens > 0 and (self._sender.has_data or self._sender.probe_due(now)):
            self._send_data(now, out)
        elif not self._sender.has_data:
            self._behind = False
        receiver = self._receiver
        # a sending end reports too, at FEEDBACK_MAX: its feedback's echo is the receiving end's RTT sample, and
        # that end's smoothed RTT needs no more (every 5 ms, it cost a small file 10 bytes on the link, 0.1 %)
        if (
            receiver.urgent
            or ((receiver.active or self._sender.busy) and now >= self._next_feedback)
            or now >= self._last_sent + KEEPALIVE
        ):
            train = self._data_from is not None and now - self._data_from < TRAIN_WATCH and rate.trains(rtt)
            fb = receiver.feedback(now, rate.srtt or 0.0, train)
            gap = FEEDBACK_MIN if train else self._feedback_interval() if receiver.active else FEEDBACK_MAX
            self._next_feedback = now + gap
            self._emit(datagram.FEEDBACK, datagram.pack_feedback(fb), now)
        prober = self._prober()
        if prober is not None:  # last: the largest datagram, alone in its send
            size = prober.next_probe(now, self.rto())
            if size is not None:
                self._emit(datagram.PROBE, datagram.pack_probe(size), now)
        out += self._out
        self._out = []
        return out

    def _prober(self) -> PathMtu | None:
        """The path MTU search, while it runs and the handshake is over (the listener: once it knows its peer)."""
        pm = self._pmtu
        return pm if pm is not None and pm.searching and self._peer is not None and self._hello_at is None else None

    def path_allows(self, path_max: int | None) -> None:
        """The driver's kernel says its route towards the peer carries UDP payloads of ``path_max`` bytes (None:
        it does not say); above a jumbo frame's (loopback) the datagram size is searched up to it."""
        if self._pmtu is not None:
            self._pmtu.widen(path_max)

    def datagram_refused(self, size: int, path_max: int | None) -> None:
        """The driver's kernel refused a datagram of ``size`` bytes as too large for the path (EMSGSIZE);
        ``path_max``: the largest UDP payload the kernel's path MTU allows, if it says."""
        if self._pmtu is not None:
            self._pmtu.on_refused(size, path_max)
            self._resize()

    def _resize(self) -> None:
        """A discovered datagram size: what the path carries, at most what the target rate is worth
        (:func:`pmtu.paced_limit`)."""
        if self._pmtu is None:
            return
        size = max(min(self._pmtu.size, pmtu.paced_limit(self._rate.cap_bps)), datagram.DATA_OVERHEAD + 1)
        if size != self.datagram_size:
            self.datagram_size = size
            self._sender.resize(size - datagram.DATA_OVERHEAD)

    def _echo(self, now: float) -> int:
        """The peer's latest ts advanced by how long we held it, once: echoed again, a ts that stood still (the
        DATA sender's control datagrams are rare) made samples of an old round trip beside the data's new ones."""
        if self._peer_ts is None:
            return 0
        echo = ((self._peer_ts + int((now - self._peer_ts_at) * 1_000_000)) & MASK32) or 1
        self._peer_ts = None
        return echo

    def _emit(self, type_: int, body: bytes, now: float) -> None:
        """Queue one control datagram (not paced)."""
        if self._peer is None or self._closed:
            return
        self._out.append((self._seal.seal(type_, body, usec(now), self._echo(now)), self._peer))
        self._last_sent = now
        self._counters["datagrams_sent"] += 1

    def _earn(self, now: float, rate_Bps: float, most: float) -> None:
        """The pacer's tokens at ``now``: the rate's since the last call, plus a CATCH_UP share of what is owed,
        saved up to ``most`` bytes. If the last round left data waiting for them, what a late wake earned beyond
        ``most`` is owed (up to ``most`` again): paid back gently while the peer reports no loss, it keeps the link
        as full as the rate says, not a burst the path's buffer would drop. (Data a window held back lost nothing
        to the host.)"""
        elapsed = now - self._token_time
        if self._peer_loss:  # the path drops already: what is owed would only add to its queue
            self._owed = 0.0
        repaid = min(self._owed, rate_Bps * CATCH_UP * elapsed)
        tokens = self._tokens + rate_Bps * elapsed + repaid
        self._owed -= repaid
        if tokens > most:
            if self._behind and not self._peer_loss:
                self._owed = min(self._owed + tokens - max(most, self._tokens), most)
            tokens = most
        self._tokens, self._token_time = tokens, now

    def _send_data(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        chunks = self._sender.next_chunks(math.ceil(self._tokens), now, CHUNKS_PER_ROUND)
        self._behind = len(chunks) == CHUNKS_PER_ROUND
        if not chunks:
            return
        seal_data, peer = self._seal.seal_data, self._peer
        first = self._seal.next_seq
        payload_bytes = resent = sent = 0
        i, n = 0, len(chunks)
        while i < n:
            file_id, off, length, is_resend = chunks[i]
            # a run of adjacent chunks of one file is one read
            j, hi = i + 1, off + length
            while j < n and chunks[j][0] == file_id and chunks[j][1] == hi and chunks[j][3] == is_resend:
                hi += chunks[j][2]
                j += 1
            block = self._read(file_id, off, hi, is_resend)
            if block is not None:
                runs = [(o, ln) for _, o, ln, _ in chunks[i:j]]
                out.extend([(sealed, peer) for sealed in seal_data(file_id, off, block, runs)])
                payload_bytes += hi - off
                if is_resend:
                    resent += hi - off
                sent += j - i
            i = j
        if sent:
            self._sent_at.append((first, now))
        self._tokens -= payload_bytes + sent * datagram.WIRE_OVERHEAD  # what the DATA datagrams cost the link
        self._behind = self._behind or self._tokens <= 0
        self._last_sent = now
        c = self._counters
        c["datagrams_sent"] += sent
        c["bytes_sent"] += payload_bytes
        c["bytes_retransmitted"] += resent

    def _read(self, file_id: int, lo: int, hi: int, resend: bool) -> memoryview | None:
        read = self._readers.get(file_id)
        if read is None:
            return None
        try:
            return memoryview(read(lo, hi, resend))
        except EngineError as exc:
            self.stop_sending(file_id)
            self._events.append(SendFailed(file_id, exc))
            return None
