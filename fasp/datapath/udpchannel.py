"""The engine's UDP data channel: the asyncio driver of a sans-IO :class:`fasp.datapath.connection.Connection`.

The driver owns what the connection must not: the socket (:class:`fasp.datapath.udpsocket.UdpSocket`,
batched), the clock, one pump task sleeping until the connection's timer (or until woken), and the files.
A socket reader callback feeds the connection each batch and hands the runs of adjacent payloads it reports
to a writer thread (``os.pwrite`` at their offsets, overlapping the loop's decryption); sources are read
when the connection asks for a piece's bytes. :meth:`Transport.tune` sets ascp's -g/-G block sizes and -X
request size.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from fasp.datapath import connection
from fasp.datapath.connection import (
    Address,
    CapacityMeasured,
    Connection,
    DataReceived,
    HandshakeCompleted,
    PeerAddressLearned,
    PeerClosed,
    PeerTimedOut,
    ReceiveComplete,
    SendComplete,
    SendFailed,
    SendProgress,
    SendStalled,
)
from fasp.datapath.datagram import Buffer
from fasp.datapath.rate import RateSettings
from fasp.datapath.resolve import addresses
from fasp.datapath.seal import Seal, SessionKey
from fasp.datapath.udpsocket import TooLarge, UdpSocket
from fasp.errors import os_error_code
from fasp.files import settle
from faspmanager.codes import EngineError, ErrorCode

__all__ = ["RateSettings", "Transport"]

MAX_BLOCK = 64 << 20  # -g/-G above this are clamped: one block per file in flight must fit in memory
FLUSH_AGE = 0.5  # seconds a partly filled -G block may wait for more bytes (progress must not stall)
INLINE_WRITE = 64 << 10
"""A whole small piece this size or less is written on the loop: a copy into the page cache of a few KiB costs
less than handing it to the writer thread and hearing back (10,000 files of 8 KiB: a thread wake-up, a GIL
switch and a self-pipe wake each)."""
STALL_TIMEOUT_ENV = "FASP_STALL_TIMEOUT"
PEER_TIMEOUT_ENV = "FASP_PEER_TIMEOUT"
# the connection's watchdogs, which the environment shortens for fault tests (tests/faults)
STALL_TIMEOUT = float(os.environ.get(STALL_TIMEOUT_ENV) or connection.STALL_TIMEOUT)
PEER_TIMEOUT = float(os.environ.get(PEER_TIMEOUT_ENV) or connection.PEER_TIMEOUT)
_address = itemgetter(1)  # of a (datagram, address) pair
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024  # buffers one pwritev takes at most


class _Credit:
    """A file being sent whose caller hears its progress: the bytes told so far, so each report adds only
    what is new (reports may repeat, and the last word is the file's completion)."""

    __slots__ = ("on_progress", "told")

    def __init__(self, on_progress: Callable[[int], object]) -> None:
        self.on_progress = on_progress
        self.told = 0

    def upto(self, acked: int) -> None:
        if acked > self.told:
            self.on_progress(acked - self.told)
            self.told = acked


@dataclass
class _Incoming:
    file_id: int
    fd: int
    on_progress: Callable[[int], object] | None
    done: asyncio.Future[None]
    complete: bool = False  # every byte arrived (ReceiveComplete); done once their writes landed too
    pending: int = 0  # writes handed to the writer thread and not yet reported back
    drained: asyncio.Future[None] | None = None  # set once pending drops to 0, for a receive that ends early
    # -G: adjacent payloads collected into one block of up to write_size bytes at buf_lo
    buf: list[Buffer] = field(default_factory=list)
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

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_done: Callable[[list[tuple[_Incoming, int, OSError | None]]], None]
    ) -> None:
        self._loop = loop
        self._on_done = on_done  # called on the loop with [(incoming, new_bytes, OSError | None), ...]
        self._queue: queue.SimpleQueue[tuple[_Incoming, Buffer | list[memoryview], int, int] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def submit(self, inc: _Incoming, data: Buffer | list[memoryview], offset: int, new: int) -> None:
        """Write ``data`` (one buffer, or adjacent ones) at ``offset``; ``new``: the bytes to report as progress."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fasp-writer", daemon=True)
            self._thread.start()
        inc.pending += 1
        self._queue.put((inc, data, offset, new))

    def write_now(self, inc: _Incoming, data: Buffer, offset: int, new: int) -> None:
        """As :meth:`submit`, but on the caller's thread (the loop), reported at once: for a few KiB cheaper than
        the thread's hand-off."""
        inc.pending += 1
        self._on_done([_write_one(inc, data, offset, new)])

    def close(self) -> None:
        """The thread ends after the writes already queued."""
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            item = get()
            done: list[tuple[_Incoming, int, OSError | None]] = []
            while item is not None:
                done.append(_write_one(*item))
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


def _write_one(
    inc: _Incoming, data: Buffer | list[memoryview], offset: int, new: int
) -> tuple[_Incoming, int, OSError | None]:
    """One write, and its outcome as the loop hears of it."""
    try:
        _pwrite_all(inc.fd, data, offset)
        return inc, new, None
    except OSError as exc:
        return inc, new, exc


class _Source:
    """A file being sent: its bytes as the connection asks for them (a PieceReader).

    ``source`` is an fd (read with os.pread) or a buffer holding exactly [start, end). With -g
    (``read_size``), new data comes from blocks of read_size bytes read one after the other (the latest is
    kept until the last byte went out); a resend outside it reads only its own bytes, at most read_size per
    pread."""

    def __init__(self, source: int | memoryview, start: int, end: int, read_size: int) -> None:
        self._source, self._start, self._end, self._size = source, start, end, read_size
        self._block: tuple[int, Buffer] = (0, b"")

    def read(self, lo: int, hi: int, resend: bool) -> Buffer:
        source = self._source
        if not isinstance(source, int):
            return source[lo - self._start : hi - self._start]
        if hi <= lo:
            return b""
        size, end = self._size, self._end
        if not size:
            return _pread(source, lo, hi)
        parts = []
        pos = lo
        while pos < hi:
            at, block = self._block
            if not at <= pos < at + len(block):
                if resend:
                    at, block = pos, memoryview(_pread(source, pos, min(hi, pos + size)))
                else:
                    at, block = pos, memoryview(_pread(source, pos, min(end, pos + size)))
                    self._block = (at, block)
            parts.append(block[pos - at : hi - at])
            pos += len(parts[-1])
        if hi >= end:  # all of it sent: resends read from the file, the memory goes now
            self._block = (0, b"")
        return parts[0] if len(parts) == 1 else b"".join(parts)


class Transport:
    """One end of a session's UDP data channel (a :class:`fasp.datapath.datachannel.DataChannel`).

    ``key`` (:class:`fasp.datapath.seal.SessionKey`, derived by both ends for this session) must serve one
    listen/connect pair only: the nonces restart with every Transport."""

    def __init__(self, sock: UdpSocket, conn: Connection, discover: bool) -> None:
        self._loop = asyncio.get_running_loop()
        if discover:
            sock.discover_path_mtu()
        self._sock = sock
        self._conn = conn
        self._discover = discover
        if discover and conn.peer is not None:
            conn.path_allows(sock.path_max(conn.peer))
        self.on_capacity: Callable[[int], None] | None = None  # the measured capacity (kbit/s), percent mode
        self._read_size = 0  # -g (0: read what one pump round sends)
        self._write_size = 0  # -G (0: write what one socket read brought)
        self._send_done: dict[int, asyncio.Future[None]] = {}
        self._credits: dict[int, _Credit] = {}  # files being sent whose caller hears their progress
        self._incoming: dict[int, _Incoming] = {}
        self._writer = _Writer(self._loop, self._on_written)
        self._bytes_written = 0
        self._closed = False
        self._peer_closed = False
        self._handshake: asyncio.Future[None] = self._loop.create_future()  # a dialing transport's answer
        self._dialing = False  # made by dial(): sends wait for the handshake
        self._reached: asyncio.Future[None] = self._loop.create_future()  # the peer's first datagram came
        if conn.peer is not None:  # connecting: the peer is the address we dial
            self._reached.set_result(None)
        self._wake: asyncio.Future[None] | None = None
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._pump_task = self._loop.create_task(self._pump())

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        *,
        session_id: bytes,
        key: SessionKey,
        datagram_size: int = 0,
        rate: RateSettings | None = None,
    ) -> Transport:
        """Bind UDP (port 0 = any). The peer address is learned from its first AUTHENTICATED datagram.
        ``datagram_size`` 0 (the default) discovers the path MTU; any other size is used as it is (-Z)."""
        conn = _connection(Seal(session_id, key, direction=1), None, datagram_size, rate)
        try:
            sock = UdpSocket.bind(host, port)
        except OSError as exc:
            raise EngineError(ErrorCode.CONNECTION_ERROR, f"cannot bind UDP {host}:{port}: {exc}") from None
        return cls(sock, conn, not datagram_size)

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        session_id: bytes,
        key: SessionKey,
        datagram_size: int = 0,
        rate: RateSettings | None = None,
        timeout: float = 10.0,
    ) -> Transport:
        """Bind an ephemeral port and handshake with a listener (the connection retransmits hellos).

        Raises EngineError(15) if the listener never answers within timeout, (14) on socket errors."""
        self = await cls.dial(host, port, session_id=session_id, key=key, datagram_size=datagram_size, rate=rate)
        try:
            await self.established(timeout)
        except BaseException:
            await self.close()
            raise
        return self

    @classmethod
    async def dial(
        cls,
        host: str,
        port: int,
        *,
        session_id: bytes,
        key: SessionKey,
        datagram_size: int = 0,
        rate: RateSettings | None = None,
    ) -> Transport:
        """Bind an ephemeral port and start the handshake with a listener, without waiting for its answer
        (:meth:`established` does): the session can meanwhile say what it will send. :meth:`send` waits for
        the answer, so no file byte leaves before the listener accepted our hello. EngineError(14) on socket
        errors."""
        try:
            infos = await addresses(host, port, socket.SOCK_DGRAM)
            family, *_, addr = infos[0]
            conn = _connection(Seal(session_id, key, direction=0), addr, datagram_size, rate)
            sock = UdpSocket.bind("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
        except OSError as exc:
            raise EngineError(ErrorCode.CONNECTION_ERROR, f"cannot reach UDP {host}:{port}: {exc}") from None
        self = cls(sock, conn, not datagram_size)
        self._dialing = True
        conn.connect(time.monotonic())
        return self

    async def established(self, timeout: float = 10.0) -> None:
        """Until the listener answered the hello of :meth:`dial`: EngineError(15) if it did not within
        ``timeout`` (the caller closes the transport), or the error that closed the transport meanwhile."""
        try:
            await asyncio.wait_for(asyncio.shield(self._handshake), timeout)
        except TimeoutError:
            raise EngineError(ErrorCode.CONNECTION_TIMEOUT, f"no answer from UDP peer within {timeout:g}s") from None

    async def reached(self) -> None:
        """Until the peer's first authenticated datagram arrived (at once when connecting), or the error that
        closed the transport first. A listener that must not act for a peer it has not heard from waits here."""
        await asyncio.shield(self._reached)

    # ---- public API ---------------------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        return self._sock.port

    @property
    def datagram_size(self) -> int:
        return self._conn.datagram_size

    @property
    def peer_timeout(self) -> float:
        return self._conn.peer_timeout

    @peer_timeout.setter
    def peer_timeout(self, seconds: float) -> None:
        self._conn.peer_timeout = seconds

    @property
    def stall_timeout(self) -> float:
        return self._conn.stall_timeout

    @stall_timeout.setter
    def stall_timeout(self, seconds: float) -> None:
        self._conn.stall_timeout = seconds

    def tune(
        self, *, read_size: int | None = None, write_size: int | None = None, retransmission_max: int | None = None
    ) -> None:
        """ascp's -g, -G and -X for this end (the sending role passes the first, the receiving role the others).

        Sources are read in blocks of ``read_size`` bytes, destinations written in blocks of up to
        ``write_size`` bytes (both clamped to MAX_BLOCK; files already being sent keep their reads); a
        retransmission request (a FEEDBACK body) stays within ``retransmission_max`` bytes, see
        :func:`fasp.datapath.recvstate.feedback_limit`. 0 restores the engine's choice; None leaves a setting
        as it is."""
        if read_size is not None:
            self._read_size = min(read_size, MAX_BLOCK)
        if write_size is not None:
            self._write_size = min(write_size, MAX_BLOCK)
        if retransmission_max is not None:
            self._conn.set_retransmission_max(retransmission_max)

    async def send(
        self,
        file_id: int,
        source: int | Buffer,
        start: int,
        end: int,
        on_progress: Callable[[int], object] | None = None,
    ) -> None:
        """Send bytes [start, end) of ``source`` as file ``file_id``; return once the receiver has them all.

        ``source`` is an int fd (read with os.pread) or a bytes-like object holding exactly [start, end).
        ``on_progress(n)``: n more bytes acknowledged, as the receiver's feedback reports them (a few times
        per round trip, never per datagram), the rest once it confirmed them all."""
        self._check_open()
        if self._dialing and not self._handshake.done():
            await asyncio.shield(self._handshake)  # no file byte before the listener accepted our hello
            self._check_open()
        if not isinstance(source, int):
            source = memoryview(source).cast("B")
            if len(source) != end - start:
                raise EngineError(ErrorCode.INTERNAL_ERROR, "buffer length differs from end - start")
        reader = _Source(source, start, end, self._read_size)
        self._conn.send_file(file_id, start, end, reader.read, time.monotonic())
        done = self._send_done[file_id] = self._loop.create_future()
        credit = None if on_progress is None else self._credits.setdefault(file_id, _Credit(on_progress))
        self._kick()
        try:
            await done
            if credit is not None:
                credit.upto(end - start)
        finally:
            self._conn.stop_sending(file_id)
            self._send_done.pop(file_id, None)
            self._credits.pop(file_id, None)

    async def receive(
        self,
        file_id: int,
        fd: int,
        start: int,
        end: int,
        on_progress: Callable[[int], object] | None = None,
        whole: bool = False,
    ) -> None:
        """Write bytes [start, end) of file ``file_id`` into ``fd`` at their offsets; return once all are written.

        With ``whole`` (meant for a small range: it is held in memory) nothing is written until every byte
        arrived, then all of them with one write: until then ``fd`` is left as it was, never with a hole."""
        self._check_open()
        done: asyncio.Future[None] = self._loop.create_future()
        inc = self._incoming[file_id] = _Incoming(file_id, fd, on_progress, done)
        if whole and start < end:
            inc.whole, inc.whole_lo = bytearray(end - start), start
        self._conn.expect_file(file_id, start, end)
        if start >= end:
            inc.complete = True
            done.set_result(None)
        self._kick()  # the pump now owes this file feedback
        try:
            await done
        except BaseException:
            self._conn.stop_expecting(file_id, abandon=True)
            self._flush(inc)  # what arrived is kept (a resume starts after it)
            if inc.pending:  # the caller may close fd once we return: let queued writes land first, through
                inc.drained = self._loop.create_future()  # a second cancel too (the session ending on an abort)
                await settle.wait_out([inc.drained])
            raise
        finally:
            self._conn.stop_expecting(file_id, abandon=False)
            if self._incoming.get(file_id) is inc:
                del self._incoming[file_id]

    @property
    def rate_settings(self) -> RateSettings:
        """The settings in force (a fallback transport takes them over as they are, percent mode included)."""
        return self._conn.rate_settings

    def window_bytes(self) -> int:
        """The measured rate x RTT, with room (:meth:`Connection.window_bytes`)."""
        return self._conn.window_bytes()

    def control_rtt(self, rtt: float) -> None:
        self._conn.control_rtt(rtt)

    def charge(self, nbytes: int) -> None:
        self._conn.charge(nbytes)

    def set_rate(self, rate: RateSettings) -> None:
        """Takes effect at once (within one pacing tick)."""
        self._conn.set_rate(rate)
        self._kick()

    def stats(self) -> dict[str, Any]:
        return {**self._conn.stats(), "bytes_received": self._bytes_written}

    async def close(self) -> None:
        """Idempotent. Frees the socket."""
        if self._closed:
            return
        now = time.monotonic()
        self._conn.close(now)
        self._transmit(self._conn.datagrams_to_send(now))
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
        for waited in (self._handshake, self._reached):
            if not waited.done():
                waited.set_exception(error)
                waited.exception()

    def _fail_all(self, error: EngineError, spare_received: bool = False) -> None:
        """Fail pending sends and receives; with ``spare_received``, not the receives that have every byte
        and only wait for their writes to land (a peer may close as soon as we confirmed)."""
        incoming = [i for i in self._incoming.values() if not (spare_received and i.complete)]
        for fut in list(self._send_done.values()) + [i.done for i in incoming]:
            if not fut.done():
                fut.set_exception(error)

    def _kick(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _transmit(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """Send runs of datagrams to one address in batches; those the kernel refuses (a full buffer) are lost
        like any other, feedback repairs them, and a socket error is left to the peer watchdog."""
        if not datagrams:
            return
        packets, addrs = zip(*datagrams)
        runs = (
            [(addrs[0], packets)]
            if addrs.count(addrs[0]) == len(addrs)  # the common case, at C speed
            else [(addr, [d for d, _ in run]) for addr, run in itertools.groupby(datagrams, key=_address)]
        )
        for addr, run in runs:
            try:
                self._sock.send_batch(list(run), addr)
            except TooLarge as exc:
                self._conn.datagram_refused(exc.size, self._sock.path_max(addr))
            except OSError:
                pass

    def _on_readable(self) -> None:
        batch = self._sock.recv_batch()
        now = time.monotonic()
        conn = self._conn
        conn.receive_datagrams(batch, now)
        self._handle_events()
        timer = conn.get_timer()
        if timer is not None and timer <= now:
            self._kick()

    def _handle_events(self) -> None:
        conn = self._conn
        while (event := conn.next_event()) is not None:
            if type(event) is DataReceived:
                self._write(event)
            elif isinstance(event, ReceiveComplete):
                self._on_received(event.file_id)
            elif isinstance(event, SendComplete):
                self._settle(event.file_id, None)
            elif type(event) is SendProgress:
                credit = self._credits.get(event.file_id)
                if credit is not None:
                    credit.upto(event.acked)
            elif isinstance(event, SendStalled):
                self._settle(
                    event.file_id,
                    EngineError(
                        ErrorCode.DATA_TRANSFER_TIMEOUT, f"no progress on file {event.file_id} for {event.seconds:g}s"
                    ),
                )
            elif isinstance(event, SendFailed):
                self._settle(event.file_id, event.error)
            elif isinstance(event, PeerTimedOut):
                self._fail_all(
                    EngineError(ErrorCode.CONNECTION_LOST, f"no datagram from the peer for {event.seconds:g}s"),
                    spare_received=True,
                )
            elif isinstance(event, PeerClosed):
                self._peer_closed = True
                self._fail_all(
                    EngineError(ErrorCode.CONNECTION_LOST, f"peer closed the data channel (code {event.code})"),
                    spare_received=True,
                )
            elif isinstance(event, HandshakeCompleted):
                if not self._handshake.done():
                    self._handshake.set_result(None)
            elif isinstance(event, PeerAddressLearned):
                if self._discover:  # what the kernel's route towards the peer carries bounds the search
                    conn.path_allows(self._sock.path_max(event.address))
                if not self._reached.done():
                    self._reached.set_result(None)
                self._kick()
            elif isinstance(event, CapacityMeasured) and self.on_capacity is not None:
                self.on_capacity(event.kbps)

    def _settle(self, file_id: int, error: EngineError | None) -> None:
        fut = self._send_done.get(file_id)
        if fut is None or fut.done():
            return
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)

    def _on_received(self, file_id: int) -> None:
        """Every byte of a file arrived: write what -G still holds; done once nothing is pending."""
        inc = self._incoming.get(file_id)
        if inc is None:
            return
        inc.complete = True
        self._flush(inc)
        if inc.pending == 0 and not inc.done.done():
            inc.done.set_result(None)

    def _write(self, run: DataReceived) -> None:
        """Hand received payloads to the writer thread; with -G, collect them into blocks of write_size bytes
        first (a gap, the file's last byte or FLUSH_AGE writes a shorter one)."""
        inc = self._incoming.get(run.file_id)
        if inc is None or inc.done.done() or inc.whole_landed:
            return
        payloads, offset, new = run.payloads, run.offset, run.new
        if inc.whole is not None:
            buf, at = inc.whole, offset - inc.whole_lo
            for payload in payloads:
                lo, hi = max(at, 0), min(at + len(payload), len(buf))  # only the bytes inside the range
                if lo < hi:
                    buf[lo:hi] = payload[lo - at : hi - at]
                at += len(payload)
            inc.whole_new += new
            # by the bytes copied in: the one write must leave no hole that a second write would fill
            if inc.whole_new >= len(buf):
                data, inc.whole, inc.whole_landed = inc.whole, None, True
                write = self._writer.submit if len(data) > INLINE_WRITE else self._writer.write_now
                write(inc, data, inc.whole_lo, inc.whole_new)
            return
        size = self._write_size
        if not size:
            self._writer.submit(inc, payloads, offset, new)  # one pwritev: the payloads are not joined first
            return
        if inc.buf_len and inc.buf_lo + inc.buf_len != offset:
            self._flush(inc)
        if not inc.buf_len:
            inc.buf_lo, inc.buf_since = offset, time.monotonic()
        inc.buf.extend(payloads)
        inc.buf_len += run.end - offset
        inc.buf_new += new
        if inc.buf_len >= size:
            self._flush(inc, size)

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
            self._writer.submit(inc, data[at : at + block], inc.buf_lo + at, new)
        rest = data[whole:]
        inc.buf = [rest] if rest else []
        inc.buf_lo += whole
        inc.buf_len = len(rest)

    def _on_written(self, done: list[tuple[_Incoming, int, OSError | None]]) -> None:
        """Writes landed (or failed): report progress, and completion once a complete file has none pending."""
        for inc, new, error in done:
            inc.pending -= 1
            if inc.done.done() and not (inc.done.cancelled() and error is None):
                pass  # failed or complete; a cancelled receive still reports what it wrote while draining
            elif error is not None:
                self._conn.stop_expecting(inc.file_id, abandon=True)
                # the errno's own code (25 no space, 24 too big, 26 read-only, 5 permissions), else 36
                inc.done.set_exception(
                    EngineError(os_error_code(error, ErrorCode.DISK_WRITE), f"write failed: {error.strerror or error}")
                )
            else:
                self._bytes_written += new
                if inc.on_progress is not None:
                    try:
                        inc.on_progress(new)
                    except Exception as exc:  # the caller's callback failed: its receive fails, not the session
                        self._conn.stop_expecting(inc.file_id, abandon=True)
                        if not inc.done.done():
                            inc.done.set_exception(exc)
            if inc.pending == 0:
                if not inc.done.done() and inc.complete:
                    inc.done.set_result(None)
                if inc.drained is not None and not inc.drained.done():
                    inc.drained.set_result(None)

    async def _pump(self) -> None:
        """The one timer: run what the connection has due, send what it yields, sleep until its next deadline
        (or a -G block's FLUSH_AGE), or until woken."""
        loop, conn = self._loop, self._conn
        while True:
            now = time.monotonic()
            conn.handle_timer(now)
            self._transmit(conn.datagrams_to_send(now))
            self._handle_events()
            at = conn.get_timer()
            if at is None:
                return
            if self._write_size:
                at = min(at, self._flush_aged(now))
            delay = at - now
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

    def _flush_aged(self, now: float) -> float:
        """Write -G blocks that waited FLUSH_AGE; when the next one will have."""
        at = now + FLUSH_AGE
        for inc in self._incoming.values():
            if inc.buf_len:
                if now - inc.buf_since >= FLUSH_AGE:
                    self._flush(inc)
                else:
                    at = min(at, inc.buf_since + FLUSH_AGE)
        return at


def _connection(seal: Seal, peer: Address | None, datagram_size: int, rate: RateSettings | None) -> Connection:
    return Connection(
        seal, peer, datagram_size, rate, time.monotonic(), peer_timeout=PEER_TIMEOUT, stall_timeout=STALL_TIMEOUT
    )


def _pread(fd: int, lo: int, hi: int) -> bytes:
    """Bytes [lo, hi) of ``fd``, all of them, else EngineError(35)."""
    try:
        data = os.pread(fd, hi - lo, lo)
    except OSError as exc:
        raise EngineError(ErrorCode.DISK_READ, f"read failed: {exc}") from None
    if len(data) != hi - lo:
        raise EngineError(ErrorCode.DISK_READ, "source file shorter than announced")
    return data


def _pwrite_all(fd: int, data: Buffer | list[memoryview], offset: int) -> None:
    """All of ``data`` (a buffer, or adjacent buffers: one pwritev) at ``offset``: a filesystem filling up
    writes short first (the rest then fails with ENOSPC, which is what the file's error must say; a short write
    taken as whole lost those bytes)."""
    if not isinstance(data, list):
        data = [memoryview(data)]
    parts = [part for part in data if len(part)]
    while parts:
        batch = parts[:IOV_MAX]
        n = os.pwrite(fd, batch[0], offset) if len(batch) == 1 else os.pwritev(fd, batch, offset)
        if n <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        offset += n
        done = 0
        while done < len(parts) and n >= len(parts[done]):  # drop the buffers written whole
            n -= len(parts[done])
            done += 1
        del parts[:done]
        if n:  # and the start of one written in part
            parts[0] = memoryview(parts[0])[n:]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
