"""The engine's UDP data channel: one asyncio API over the sans-IO wire, seal, sender, receiver and rate parts.

A single pump task paces sending (a batch per timer tick, sized by the rate
controller's token bucket; it sleeps when there is nothing to do), emits
feedback and keepalives, and runs the watchdogs. A socket reader callback opens
datagrams, applies feedback and hands runs of adjacent payloads to a writer
thread (``os.pwrite`` at their offsets, overlapping the loop's decryption).
:meth:`Transport.tune` sets ascp's -g/-G block sizes and -X request size.
"""
from __future__ import annotations

import asyncio
import errno
import os
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from faspmanager.codes import EngineError, ErrorCode

from fasp.datapath import datagram
from fasp.errors import os_error_code
from fasp.datapath.rate import CEILING_KBPS, RateController, RateSettings
from fasp.datapath.recvstate import ReceiveState, feedback_limit
from fasp.datapath.seal import Rejected, Seal, SessionKey
from fasp.datapath.sendstate import SendState
from fasp.datapath.udpsocket import UdpSocket

__all__ = ["Transport", "RateSettings"]

DEFAULT_RATE = RateSettings(target_kbps=CEILING_KBPS, policy="fair")
KEEPALIVE = 0.5  # seconds between datagrams when otherwise silent (the peer's liveness signal)
TICK = 0.002  # pacing granularity
BURST = 0.01  # seconds of rate the token bucket may save up (covers a late timer)
CHUNKS_PER_ROUND = 64  # datagrams built per pump round before letting the reader run
RTT_SAMPLE_GAP = 0.005  # DATA echoes are sampled at most this often
MAX_BLOCK = 64 << 20  # -g/-G above this are clamped: one block per file in flight must fit in memory
FLUSH_AGE = 0.5  # seconds a partly filled -G block may wait for more bytes (progress must not stall)
MASK32 = 0xFFFFFFFF
STALL_TIMEOUT_ENV = "FASP_STALL_TIMEOUT"
PEER_TIMEOUT_ENV = "FASP_PEER_TIMEOUT"


def _usec(now: float) -> int:
    return int(now * 1_000_000) & MASK32


@dataclass
class _Incoming:
    file_id: int
    fd: int
    on_progress: object
    done: asyncio.Future
    pending: int = 0  # writes handed to the writer thread and not yet reported back
    drained: asyncio.Future | None = None  # set once pending drops to 0, for a receive that ends early
    # -G: adjacent payloads collected into one block of up to write_size bytes at buf_lo
    buf: list = field(default_factory=list)
    buf_lo: int = 0
    buf_len: int = 0
    buf_new: int = 0  # new bytes among them (progress to report once written)
    buf_since: float = 0.0
    # whole: the piece's bytes gather in memory and land with ONE write once all arrived, so the file never
    # holds a hole (its size stays a true watermark: a small file needs no resume sidecar)
    whole: bytearray | None = None
    whole_lo: int = 0
    whole_new: int = 0
    whole_landed: bool = False  # its one write is submitted: a late duplicate must not write again


class _Writer:
    """Positional writes on a thread of their own: os.pwrite releases the GIL, so copying into the page
    cache overlaps the event loop's decrypting. Results return to the loop in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_done):
        self._loop = loop
        self._on_done = on_done  # called on the loop with [(incoming, new_bytes, OSError | None), ...]
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, inc: _Incoming, data, offset: int, new: int) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fasp-writer", daemon=True)
            self._thread.start()
        inc.pending += 1
        self._queue.put((inc, data, offset, new))

    def close(self) -> None:
        """The thread ends after the writes already queued."""
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            item = get()
            done = []
            while item is not None:
                inc, data, offset, new = item
                try:
                    _pwrite_all(inc.fd, data, offset)
                    done.append((inc, new, None))
                except OSError as exc:
                    done.append((inc, new, exc))
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            try:
                self._loop.call_soon_threadsafe(self._on_done, done)
            except RuntimeError:  # the loop is gone: nobody is waiting any more
                return
            if item is None:
                return


class Transport:
    """One end of a session's UDP data channel. Either end can send and receive files.

    ``key`` (:class:`fasp.datapath.seal.SessionKey`, derived by both ends for this session) must serve one
    listen/connect pair only: the nonces restart with every Transport."""

    # seconds without progress before a send fails with code 40, and without any datagram from the peer
    # before it counts as gone (code 16); the environment shortens them for fault tests (tests/faults)
    stall_timeout = float(os.environ.get(STALL_TIMEOUT_ENV) or 20.0)
    peer_timeout = float(os.environ.get(PEER_TIMEOUT_ENV) or 10.0)
    on_capacity = None  # called once with the measured path capacity (kbit/s) in percent mode, if set

    def __init__(self, sock: UdpSocket, seal: Seal, peer, datagram_size: int, rate: RateSettings | None):
        if datagram_size < datagram.DATA_OVERHEAD + 1 or datagram_size > 65507:
            raise EngineError(ErrorCode.USAGE, f"datagram size {datagram_size} out of range")
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._seal = seal
        self._peer = peer
        self.datagram_size = datagram_size
        now = time.monotonic()
        self._rate = RateController(rate or DEFAULT_RATE, now)
        self._sender = SendState(datagram_size - datagram.DATA_OVERHEAD)
        self._receiver = ReceiveState(feedback_limit(self._feedback_room))
        self._read_size = 0  # -g (0: read what one pump round sends)
        self._write_size = 0  # -G (0: write what one socket read brought)
        self._sources: dict[int, tuple[object, int, int]] = {}  # file_id -> (fd or buffer, start, end)
        self._blocks: dict[int, tuple[int, memoryview]] = {}  # file_id -> the -g block new data comes from
        self._send_done: dict[int, asyncio.Future] = {}
        self._incoming: dict[int, _Incoming] = {}
        self._writer = _Writer(self._loop, self._on_written)
        self._closed = False
        self._peer_closed = False
        self._peer_ts = None
        self._peer_ts_at = 0.0
        self._last_heard = now
        self._last_sent = 0.0
        self._next_feedback = now
        self._last_rtt_sample = 0.0
        self._tokens = 0.0
        self._token_time = now
        self._handshake: asyncio.Future = self._loop.create_future()
        self._wake: asyncio.Future | None = None
        self._peer_loss = 0.0
        self._counters = dict(bytes_sent=0, bytes_retransmitted=0, bytes_received=0, datagrams_rejected=0,
                              datagrams_sent=0, datagrams_received=0)
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._pump_task = self._loop.create_task(self._pump())

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    async def listen(cls, host: str, port: int, *, session_id: bytes, key: SessionKey,
                     datagram_size: int = 1400, rate: RateSettings | None = None) -> "Transport":
        """Bind UDP (port 0 = any). The peer address is learned from its first AUTHENTICATED datagram."""
        seal = Seal(session_id, key, direction=1)
        try:
            sock = UdpSocket.bind(host, port)
        except OSError as exc:
            raise EngineError(ErrorCode.CONNECTION_ERROR, f"cannot bind UDP {host}:{port}: {exc}") from None
        return cls(sock, seal, None, datagram_size, rate)

    @classmethod
    async def connect(cls, host: str, port: int, *, session_id: bytes, key: SessionKey,
                      datagram_size: int = 1400, rate: RateSettings | None = None,
                      timeout: float = 10.0) -> "Transport":
        """Bind an ephemeral port and handshake with a listener (retransmitting hellos).

        Raises EngineError(15) if the listener never answers within timeout, (14) on socket errors."""
        seal = Seal(session_id, key, direction=0)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            family, *_, addr = infos[0]
            sock = UdpSocket.bind("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
        except OSError as exc:
            raise EngineError(ErrorCode.CONNECTION_ERROR, f"cannot reach UDP {host}:{port}: {exc}") from None
        self = cls(sock, seal, addr, datagram_size, rate)
        try:
            await self._hello(timeout)
        except BaseException:
            await self.close()
            raise
        return self

    async def _hello(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        gap = 0.05
        while True:
            self._emit(datagram.HELLO, datagram.pack_hello(self.datagram_size))
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineError(ErrorCode.CONNECTION_TIMEOUT, f"no answer from UDP peer within {timeout:g}s")
            try:
                await asyncio.wait_for(asyncio.shield(self._handshake), min(gap, left))
                return
            except asyncio.TimeoutError:
                gap = min(gap * 2, 1.0)

    # ---- public API ---------------------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        return self._sock.port

    @property
    def _feedback_room(self) -> int:
        return self.datagram_size - datagram.HEADER_SIZE - datagram.TAG_SIZE

    def tune(self, *, read_size: int | None = None, write_size: int | None = None,
             retransmission_max: int | None = None) -> None:
        """ascp's -g, -G and -X for this end (the sending role passes the first, the receiving role the others).

        Sources are read in blocks of ``read_size`` bytes, destinations written in blocks of up to
        ``write_size`` bytes (both clamped to MAX_BLOCK); a retransmission request (a FEEDBACK body) stays
        within ``retransmission_max`` bytes, see :func:`fasp.datapath.recvstate.feedback_limit`. 0 restores the
        engine's choice; None leaves a setting as it is."""
        if read_size is not None:
            self._read_size = min(read_size, MAX_BLOCK)
            self._blocks.clear()
        if write_size is not None:
            self._write_size = min(write_size, MAX_BLOCK)
        if retransmission_max is not None:
            self._receiver.max_feedback_bytes = feedback_limit(self._feedback_room, retransmission_max)

    async def send(self, file_id: int, source, start: int, end: int) -> None:
        """Send bytes [start, end) of ``source`` as file ``file_id``; return once the receiver has them all.

        ``source`` is an int fd (read with os.pread) or a bytes-like object holding exactly [start, end)."""
        self._check_open()
        if not isinstance(source, int):
            source = memoryview(source).cast("B")
            if len(source) != end - start:
                raise EngineError(ErrorCode.INTERNAL_ERROR, "buffer length differs from end - start")
        done = self._loop.create_future()
        self._sender.add(file_id, start, end, time.monotonic())
        self._sources[file_id] = (source, start, end)
        self._send_done[file_id] = done
        self._kick()
        try:
            await done
        finally:
            self._sender.remove(file_id)
            self._sources.pop(file_id, None)
            self._blocks.pop(file_id, None)
            self._send_done.pop(file_id, None)

    async def receive(self, file_id: int, fd: int, start: int, end: int, on_progress=None,
                      whole: bool = False) -> None:
        """Write bytes [start, end) of file ``file_id`` into ``fd`` at their offsets; return once all are written.

        With ``whole`` (meant for a small range: it is held in memory) nothing is written until every byte
        arrived, then all of them with one write: until then ``fd`` is left as it was, never with a hole."""
        self._check_open()
        done = self._loop.create_future()
        inc = self._incoming[file_id] = _Incoming(file_id, fd, on_progress, done)
        if whole and start < end:
            inc.whole, inc.whole_lo = bytearray(end - start), start
        self._receiver.register(file_id, start, end)
        if start >= end:
            done.set_result(None)
        self._kick()  # the pump now owes this file feedback
        try:
            await done
        except BaseException:
            self._receiver.unregister(file_id)
            self._flush(inc)  # what arrived is kept (a resume starts after it)
            if inc.pending:  # the caller may close fd once we return: let queued writes land first
                inc.drained = self._loop.create_future()
                await asyncio.shield(inc.drained)
            raise
        finally:
            if self._incoming.get(file_id) is inc:
                del self._incoming[file_id]

    @property
    def rate_settings(self) -> RateSettings:
        """The settings in force (a fallback transport takes them over as they are, percent mode included)."""
        return self._rate.settings

    def set_rate(self, rate: RateSettings) -> None:
        """Takes effect at once (within one pacing tick)."""
        self._rate.set_settings(rate)
        self._kick()

    def stats(self) -> dict:
        s = self._rate.settings
        srtt = self._rate.srtt
        return dict(
            rate_kbps=int(self._rate.rate_bps / 1000), target_kbps=s.target_kbps, min_kbps=s.min_kbps,
            capacity_kbps=None if self._rate.capacity_bps is None else int(self._rate.capacity_bps / 1000),
            policy=s.policy, rtt_ms=round(srtt * 1000, 3) if srtt is not None else None,
            loss=self._peer_loss, loss_in=self._receiver.loss,
            datagrams_unknown_file=self._receiver.unknown_datagrams, **self._counters)

    async def close(self) -> None:
        """Idempotent. Frees the socket."""
        if self._closed:
            return
        if self._peer is not None:
            for _ in range(2):
                self._emit(datagram.CLOSE, datagram.pack_close(0))
        self._shutdown(EngineError(ErrorCode.CONNECTION_LOST, "transport closed"))
        try:
            await self._pump_task
        except asyncio.CancelledError:
            pass

    # ---- internals ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(ErrorCode.CONNECTION_LOST, "transport closed")
        if self._peer_closed:
            raise EngineError(ErrorCode.CONNECTION_LOST, "the peer closed the data channel")

    def _shutdown(self, error: EngineError) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._pump_task.cancel()
        self._sock.close()
        self._writer.close()
        self._fail_all(error)
        if not self._handshake.done():
            self._handshake.set_exception(error)
            self._handshake.exception()

    def _fail_all(self, error: EngineError, spare_received: bool = False) -> None:
        """Fail pending sends and receives; with ``spare_received``, not the receives that have every byte
        and only wait for their writes to land (a peer may close as soon as we confirmed)."""
        incoming = [i for i in self._incoming.values()
                    if not (spare_received and self._receiver.is_complete(i.file_id))]
        for fut in list(self._send_done.values()) + [i.done for i in incoming]:
            if not fut.done():
                fut.set_exception(error)

    def _kick(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _echo(self, now: float) -> int:
        if self._peer_ts is None:
            return 0
        return ((self._peer_ts + int((now - self._peer_ts_at) * 1_000_000)) & MASK32) or 1

    def _emit(self, type_: int, body: bytes) -> None:
        """Send one control datagram now (not paced)."""
        if self._peer is None or self._closed:
            return
        now = time.monotonic()
        dgram = self._seal.seal(type_, body, _usec(now), self._echo(now))
        try:
            self._sock.sock.sendto(dgram, self._peer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # the peer's liveness watchdog decides; a transient error must not kill the session
        self._last_sent = now
        self._counters["datagrams_sent"] += 1

    # reader side

    def _on_readable(self) -> None:
        seal_open = self._seal.open
        receiver = self._receiver
        counters = self._counters
        batch = self._sock.recv_batch()
        now = time.monotonic()
        run = None  # adjacent payloads of one file, written with one pwrite
        accepted = accepted_bytes = 0
        seq_high = -1
        for data, addr in batch:
            try:
                type_, seq, ts, echo, body = seal_open(data)
                if addr != self._peer:
                    # the listener learns its peer from the first authentic datagram; the connector takes
                    # the address that answers its hello (a multi-homed listener may answer from another)
                    if self._peer is not None and (type_ != datagram.HELLO_ACK or self._handshake.done()):
                        raise Rejected("datagram from a stranger")
                    self._peer = addr
                    self._kick()
                accepted += 1
                accepted_bytes += len(data)
                if seq > seq_high:
                    seq_high = seq
                if echo and (type_ != datagram.DATA or now - self._last_rtt_sample > RTT_SAMPLE_GAP):
                    self._last_rtt_sample = now
                    rtt = ((_usec(now) - echo) & MASK32) / 1_000_000
                    if rtt < 60:
                        self._rate.on_rtt(now, rtt)
                self._peer_ts, self._peer_ts_at = ts, now
                if type_ == datagram.DATA:
                    file_id, offset, length = datagram.DATA_HEAD.unpack_from(body)
                    if length != len(body) - datagram.DATA_HEAD.size:
                        raise datagram.WireError("DATA length mismatch")
                    new = receiver.on_data(file_id, offset, length, now, ts)
                    if not new:
                        continue
                    payload = memoryview(body)[datagram.DATA_HEAD.size:]
                    if run is not None and run[0] == file_id and run[2] == offset:
                        run[2] += length
                        run[3].append(payload)
                        run[4] += new
                    else:
                        if run is not None:
                            self._write(*run)
                        run = [file_id, offset, offset + length, [payload], new]
                else:
                    if run is not None:
                        self._write(*run)
                        run = None
                    self._HANDLERS[type_](self, body, now)
            except (Rejected, datagram.WireError, struct.error):
                counters["datagrams_rejected"] += 1
            if self._closed:
                return
        if accepted:
            self._last_heard = now
            counters["datagrams_received"] += accepted
            receiver.on_datagrams(accepted, accepted_bytes, seq_high)
        if run is not None:
            self._write(*run)
        if receiver.urgent:
            self._kick()

    def _write(self, file_id: int, offset: int, end: int, payloads: list, new: int) -> None:
        """Hand received payloads [offset, end) of a file to the writer thread; with -G, collect them into
        blocks of write_size bytes first (a gap, the file's last byte or FLUSH_AGE writes a shorter one)."""
        inc = self._incoming.get(file_id)
        if inc is None or inc.done.done() or inc.whole_landed:
            return
        if inc.whole is not None:
            buf, at = inc.whole, offset - inc.whole_lo
            for payload in payloads:
                lo, hi = max(at, 0), min(at + len(payload), len(buf))  # only the bytes inside the range
                if lo < hi:
                    buf[lo:hi] = payload[lo - at:hi - at]
                at += len(payload)
            inc.whole_new += new
            # by the bytes copied in, not the receiver's map: that already counts datagrams of this batch whose
            # payloads are not copied yet (a later run), and writing then left a hole that a second write filled
            if inc.whole_new >= len(buf):
                data, inc.whole, inc.whole_landed = inc.whole, None, True
                self._writer.submit(inc, data, inc.whole_lo, inc.whole_new)
            return
        size = self._write_size
        if not size:
            self._writer.submit(inc, payloads[0] if len(payloads) == 1 else b"".join(payloads), offset, new)
            return
        if inc.buf_len and inc.buf_lo + inc.buf_len != offset:
            self._flush(inc)
        if not inc.buf_len:
            inc.buf_lo, inc.buf_since = offset, time.monotonic()
        inc.buf.extend(payloads)
        inc.buf_len += end - offset
        inc.buf_new += new
        if inc.buf_len >= size:
            self._flush(inc, size)
        if inc.buf_len and self._receiver.is_complete(file_id):
            self._flush(inc)

    def _flush(self, inc: _Incoming, block: int = 0) -> None:
        """Write the collected bytes: all of them, or (``block``) as many whole blocks as there are."""
        if not inc.buf_len:
            return
        data = memoryview(inc.buf[0] if len(inc.buf) == 1 else b"".join(inc.buf))
        block = block or len(data)
        whole = len(data) - len(data) % block
        for at in range(0, whole, block):
            new = min(inc.buf_new, block)
            inc.buf_new -= new
            self._writer.submit(inc, data[at:at + block], inc.buf_lo + at, new)
        rest = data[whole:]
        inc.buf = [rest] if rest else []
        inc.buf_lo += whole
        inc.buf_len = len(rest)

    def _on_written(self, done: list) -> None:
        """Writes landed (or failed): report progress, and completion once a complete file has none pending."""
        for inc, new, error in done:
            inc.pending -= 1
            if inc.done.done():
                pass
            elif error is not None:
                self._receiver.unregister(inc.file_id)
                # the errno's own code (25 no space, 24 too big, 26 read-only, 5 permissions), else 36
                inc.done.set_exception(EngineError(os_error_code(error, ErrorCode.DISK_WRITE),
                                                   f"write failed: {error.strerror or error}"))
            else:
                self._counters["bytes_received"] += new
                if inc.on_progress is not None:
                    try:
                        inc.on_progress(new)
                    except Exception as exc:  # the caller's callback failed: its receive fails, not the session
                        self._receiver.unregister(inc.file_id)
                        inc.done.set_exception(exc)
            if inc.pending == 0:
                if not inc.done.done() and self._receiver.is_complete(inc.file_id):
                    inc.done.set_result(None)
                if inc.drained is not None and not inc.drained.done():
                    inc.drained.set_result(None)

    def _on_feedback(self, body: bytes, now: float) -> None:
        fb = datagram.parse_feedback(body)
        self._peer_loss = fb.loss
        if self._sender.busy:
            measuring = self._rate.measuring
            self._rate.on_feedback(now, fb.recv_rate_kbps * 1000, fb.loss)
            if measuring and not self._rate.measuring and self.on_capacity is not None:
                self.on_capacity(int(self._rate.capacity_bps / 1000))
        seen = now - ((_usec(now) - fb.data_ts) & MASK32) / 1_000_000 if fb.data_ts else None
        for file_id in self._sender.on_feedback(fb, now, self._rto(), seen):
            fut = self._send_done.get(file_id)
            if fut is not None and not fut.done():
                fut.set_result(None)
        if self._sender.has_data:
            self._kick()

    def _on_hello(self, body: bytes, now: float) -> None:
        datagram.parse_hello(body)
        if self._seal.direction == 1:
            self._emit(datagram.HELLO_ACK, b"")

    def _on_hello_ack(self, body: bytes, now: float) -> None:
        if not self._handshake.done():
            self._handshake.set_result(None)

    def _on_close(self, body: bytes, now: float) -> None:
        code = datagram.parse_close(body)
        self._peer_closed = True
        self._fail_all(EngineError(ErrorCode.CONNECTION_LOST, f"peer closed the data channel (code {code})"),
                       spare_received=True)

    _HANDLERS = {datagram.FEEDBACK: _on_feedback, datagram.HELLO: _on_hello,
                 datagram.HELLO_ACK: _on_hello_ack, datagram.CLOSE: _on_close}

    # pump side

    def _feedback_interval(self) -> float:
        srtt = self._rate.srtt or 0.02
        return min(max(srtt / 8, 0.005), 0.05)

    def _rto(self) -> float:
        srtt = self._rate.srtt or 0.1
        return 1.5 * srtt + 2 * self._feedback_interval() + 0.005

    async def _pump(self) -> None:
        loop = self._loop
        while True:
            now = time.monotonic()
            delay = self._service(now)
            if delay <= 0:
                await asyncio.sleep(0)
                continue
            self._wake = fut = loop.create_future()
            handle = loop.call_later(delay, _resolve, fut)
            try:
                await fut
            finally:
                handle.cancel()
                self._wake = None

    def _service(self, now: float) -> float:
        """Do what is due; return seconds until something else is."""
        waits = [1.0]
        if self._send_done or self._incoming:
            self._watchdogs(now)
        if self._closed:
            return 1.0
        if self._write_size:
            for inc in self._incoming.values():
                if inc.buf_len:
                    if now - inc.buf_since >= FLUSH_AGE:
                        self._flush(inc)
                    else:
                        waits.append(inc.buf_since + FLUSH_AGE - now)
        sender = self._sender
        if sender.busy:
            rto = self._rto()
            sender.poll(now, rto)
            waits.append(rto / 2)
        rate_Bps = self._rate.rate_bps / 8
        self._tokens = min(self._tokens + rate_Bps * (now - self._token_time),
                           max(rate_Bps * BURST, 4 * self.datagram_size))
        self._token_time = now
        if sender.has_data and self._peer is not None:
            if self._tokens > 0:
                self._send_data(now)
            if sender.has_data:
                waits.append(0.0 if self._tokens > 0 else max(TICK, -self._tokens / rate_Bps))
        if self._peer is not None:
            if self._receiver.urgent or (self._receiver.active and now >= self._next_feedback) \
                    or now - self._last_sent >= KEEPALIVE:
                self._send_feedback(now)
            if self._receiver.active:
                waits.append(self._next_feedback - now)
            waits.append(self._last_sent + KEEPALIVE - now)
        return max(0.0, min(waits))

    def _watchdogs(self, now: float) -> None:
        if now - self._last_heard > self.peer_timeout:
            self._fail_all(EngineError(ErrorCode.CONNECTION_LOST,
                                       f"no datagram from the peer for {self.peer_timeout:g}s"), spare_received=True)
            self._last_heard = now  # report once; later operations get a fresh window
            return
        for file_id in self._sender.stalled(now, self.stall_timeout):
            fut = self._send_done.get(file_id)
            if fut is not None and not fut.done():
                fut.set_exception(EngineError(ErrorCode.DATA_TRANSFER_TIMEOUT,
                                              f"no progress on file {file_id} for {self.stall_timeout:g}s"))

    def _send_feedback(self, now: float) -> None:
        fb = self._receiver.feedback(now, self._rate.srtt or 0.0)
        self._next_feedback = now + self._feedback_interval()
        self._emit(datagram.FEEDBACK, datagram.pack_feedback(fb))

    def _send_data(self, now: float) -> None:
        chunks = self._sender.next_chunks(int(self._tokens), now, CHUNKS_PER_ROUND)
        if not chunks:
            return
        seal = self._seal
        ts, echo = _usec(now), self._echo(now)
        pack = datagram.DATA_HEAD.pack
        dgrams = []
        wire_bytes = payload_bytes = resent = 0
        i, n = 0, len(chunks)
        while i < n:
            file_id, off, length, is_resend = chunks[i]
            # coalesce a run of adjacent chunks of one file into one read
            j, hi = i + 1, off + length
            while j < n and chunks[j][0] == file_id and chunks[j][1] == hi and chunks[j][3] == is_resend:
                hi += chunks[j][2]
                j += 1
            block = self._read(file_id, off, hi, is_resend)
            if block is not None:
                for k in range(i, j):
                    _, o, ln, _ = chunks[k]
                    payload = block[o - off:o - off + ln]
                    d = seal.seal(datagram.DATA, pack(file_id, o, ln) + payload, ts, echo)
                    dgrams.append(d)
                    wire_bytes += len(d)
                    payload_bytes += ln
                    if is_resend:
                        resent += ln
            i = j
        self._tokens -= wire_bytes
        sent = self._sock.send_batch(dgrams, self._peer) if dgrams else 0
        # datagrams the kernel refused (full buffer) are lost like any other: feedback repairs them
        self._last_sent = now
        c = self._counters
        c["datagrams_sent"] += sent
        c["bytes_sent"] += payload_bytes
        c["bytes_retransmitted"] += resent

    def _read(self, file_id: int, lo: int, hi: int, resend: bool = False):
        """Bytes [lo, hi) of a file being sent, or None if the source failed (its send fails with code 35).

        With -g, new data comes from blocks of read_size bytes read one after the other (the latest is
        kept until the last byte went out); a resend outside it reads only its own bytes, at most read_size
        per pread."""
        source, base, end = self._sources[file_id]
        if not isinstance(source, int):
            return source[lo - base:hi - base]
        size = self._read_size
        if hi <= lo:
            return memoryview(b"")
        try:
            if not size:
                return memoryview(self._pread(source, lo, hi))
            parts = []
            pos = lo
            while pos < hi:
                at, block = self._blocks.get(file_id, (0, b""))
                if not at <= pos < at + len(block):
                    if resend:
                        at, block = pos, memoryview(self._pread(source, pos, min(hi, pos + size)))
                    else:
                        at, block = pos, memoryview(self._pread(source, pos, min(end, pos + size)))
                        self._blocks[file_id] = (at, block)
                parts.append(block[pos - at:hi - at])
                pos += len(parts[-1])
            if hi >= end:  # all of it sent: resends read from the file, the memory goes now
                self._blocks.pop(file_id, None)
        except OSError as exc:
            fut = self._send_done.get(file_id)
            self._sender.remove(file_id)
            if fut is not None and not fut.done():
                fut.set_exception(EngineError(ErrorCode.DISK_READ, exc.strerror or str(exc)))
            return None
        return parts[0] if len(parts) == 1 else memoryview(b"".join(parts))

    @staticmethod
    def _pread(fd: int, lo: int, hi: int) -> bytes:
        try:
            data = os.pread(fd, hi - lo, lo)
        except OSError as exc:
            raise OSError(exc.errno, f"read failed: {exc}") from None
        if len(data) != hi - lo:
            raise OSError(0, "source file shorter than announced")
        return data


def _pwrite_all(fd: int, data, offset: int) -> None:
    """All of ``data`` at ``offset``: a filesystem filling up writes short first (the rest then fails with
    ENOSPC, which is what the file's error must say; a short write taken as whole lost those bytes)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        view, offset = view[n:], offset + n


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
