"""The HTTP(S) fallback data channel: the Transport API over one TCP stream, for when UDP cannot pass.

The client dials the server's fallback port (``-t``), through ``CONNECT`` on an
HTTP proxy (``-x``) and inside TLS verified against ``-I`` when given, and
upgrades with a one-time token the server engine handed it over SSH
(:mod:`fasp.datapath.httpframes`). On the server, fasp-server owns that port: it checks the
token against the registration the engine made on fasp-server's Unix socket
(``FASP_FALLBACK_SOCKET``) and relays the stream to that engine, so nothing
unauthenticated ever reaches an engine.

Frames carry datagrams sealed as on UDP (:mod:`fasp.datapath.seal`) under a key derived
for this channel from the session key (:data:`CHANNEL`): the UDP attempt already
used the session key's first nonces.
TCP does the reliability, so there is no retransmission: DATA goes out once,
paced by a token bucket at the target rate (``-l``, changeable at run time),
and the receiver answers each completed file with a FEEDBACK report that
completes the sender's ``send``. The policy has no say here: TCP's own
congestion control already shares the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fasp.datapath import datagram, httpframes
from fasp.datapath.datagram import Buffer
from fasp.datapath.rate import RateSettings
from fasp.datapath.seal import Rejected, Seal, SessionKey
from faspmanager.codes import EngineError, ErrorCode

CHUNK = 64 * 1024  # DATA payload per frame unless -g asks for other reads
MAX_READ = 512 * 1024  # largest -g honoured: a frame (MAX_FRAME) holds one read
MIN_CHUNK = 4096
PACE_SLICE = 0.02  # a frame holds at most this many seconds of the target rate (smooth pacing at low rates)
BURST = 0.05  # seconds of rate the token bucket may save up
KEEPALIVE = 1.0  # seconds between frames when otherwise silent (the peer's liveness signal)
DIAL_TIMEOUT = 15.0
READ_SIZE = 1 << 18
WINDOW = 16 << 20  # bytes the receiver may ask for ahead of their arrival: TCP itself bounds what is in flight
MASK32 = 0xFFFFFFFF


CHANNEL = b"http fallback"  # the label of this channel's key (SessionKey.channel)


def _usec() -> int:
    return int(time.monotonic() * 1_000_000) & MASK32


@dataclass
class _Incoming:
    fd: int
    start: int
    end: int
    on_progress: Callable[[int], object] | None
    done: asyncio.Future[None]
    got: int = 0


class FallbackTransport:
    """One end of a session's fallback data channel (a :class:`fasp.datapath.datachannel.DataChannel`).

    ``name`` ("http" or "https") is what SESSION reports as the transport. TCP never says a path died,
    so each end sends a keepalive when silent and, while work is pending, gives up after
    ``peer_timeout`` seconds without a byte from the peer (code 16, as on UDP)."""

    peer_timeout = 10.0
    on_capacity: Callable[[int], None] | None = None  # never called: there is no capacity probe over TCP, so
    # --auto-detect-capacity leaves the fallback at the engine's ceiling (TCP takes what the path gives)

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        session_id: bytes,
        key: SessionKey,
        direction: int,
        jpeg: bool,
        rate: RateSettings,
        name: str,
        buffered: bytes = b"",
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader, self._writer = reader, writer
        self._seal = Seal(session_id, key.channel(CHANNEL), direction)
        self._jpeg = jpeg
        self._decoder = httpframes.FrameDecoder(jpeg)
        self._rate = rate
        self.name = name
        self._read_size = CHUNK
        self._write_size = 0  # 0: one write per frame
        self._tokens = 0.0
        self._token_time = time.monotonic()
        self._send_done: dict[int, asyncio.Future[None]] = {}
        self._incoming: dict[int, _Incoming] = {}
        self._closed = False
        self._error: EngineError | None = None
        self._last_heard = self._last_sent = time.monotonic()
        self._counters = dict(
            bytes_sent=0,
            bytes_retransmitted=0,
            bytes_received=0,
            datagrams_rejected=0,
            datagrams_sent=0,
            datagrams_received=0,
            datagrams_unknown_file=0,
        )
        sock = writer.get_extra_info("sockname")
        self._local_port = sock[1] if isinstance(sock, tuple) else 0
        self._read_task = self._loop.create_task(self._read_loop(buffered))
        self._watch_task = self._loop.create_task(self._watch())

    # ---- public API ---------------------------------------------------------------------------------

    @property
    def local_port(self) -> int:
        return self._local_port

    @property
    def datagram_size(self) -> int:
        return 0

    def tune(
        self, *, read_size: int | None = None, write_size: int | None = None, retransmission_max: int | None = None
    ) -> None:
        """-g (bytes per source read, one frame each) and -G (bytes per destination write), 0 = our choice.
        -X is accepted and bounds nothing: TCP does the retransmitting here."""
        if read_size is not None:
            self._read_size = min(read_size, MAX_READ) or CHUNK
        if write_size is not None:
            self._write_size = write_size

    async def send(
        self,
        file_id: int,
        source: int | Buffer,
        start: int,
        end: int,
        on_progress: Callable[[int], object] | None = None,
    ) -> None:
        """Send bytes [start, end) of ``source`` (an fd, or a buffer of exactly those bytes) as ``file_id``;
        return once the receiver reported them all written (``on_progress`` hears of them then: the receiver
        tells no less)."""
        self._check_open()
        if start >= end:
            return
        fd, view = (source, None) if isinstance(source, int) else (-1, memoryview(source).cast("B"))
        if view is not None and len(view) != end - start:
            raise EngineError(ErrorCode.INTERNAL_ERROR, "buffer length differs from end - start")
        done = self._send_done[file_id] = self._loop.create_future()
        try:
            pos = start
            while pos < end and not done.done():
                size = await self._pace(end - pos)
                self._check_open()
                block = view[pos - start : pos - start + size] if view is not None else _pread(fd, size, pos)
                self._emit(datagram.DATA, datagram.pack_data(file_id, pos, block))
                self._counters["bytes_sent"] += size
                pos += size
                await self._writer.drain()
            await done
            if on_progress is not None:
                on_progress(end - start)
        except (ConnectionError, OSError) as exc:
            raise self._fail(EngineError(ErrorCode.CONNECTION_LOST, f"HTTP fallback connection lost: {exc}")) from None
        finally:
            self._send_done.pop(file_id, None)

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

        ``whole`` needs nothing here: TCP delivers in order, so the bytes land in order and leave no hole."""
        self._check_open()
        if start >= end:
            return
        inc = self._incoming[file_id] = _Incoming(fd, start, end, on_progress, self._loop.create_future())
        try:
            await inc.done
        finally:
            if self._incoming.get(file_id) is inc:
                del self._incoming[file_id]

    @property
    def rate_settings(self) -> RateSettings:
        return self._rate

    def window_bytes(self) -> int:
        """A fixed WINDOW: TCP's own window bounds what is in flight, the requests need only stay ahead of it."""
        return WINDOW

    def control_rtt(self, rtt: float) -> None:
        """Nothing to do: the window is fixed."""

    def charge(self, nbytes: int) -> None:
        self._tokens -= nbytes

    def set_rate(self, rate: RateSettings) -> None:
        """Takes effect with the next frame (within one pacing slice)."""
        self._rate = rate

    def stats(self) -> dict[str, Any]:
        s = self._rate
        return dict(
            rate_kbps=s.target_kbps,
            target_kbps=s.target_kbps,
            min_kbps=s.min_kbps,
            policy=s.policy,
            capacity_kbps=None,
            rtt_ms=None,
            loss=0.0,
            loss_in=0.0,
            **self._counters,
        )

    async def close(self) -> None:
        """Idempotent: say CLOSE, then free the connection."""
        if self._closed:
            return
        if self._error is None:
            with contextlib.suppress(Exception):
                self._emit(datagram.CLOSE, datagram.pack_close(0))
        self._closed = True
        self._fail(EngineError(ErrorCode.CONNECTION_LOST, "transport closed"))
        for task in (self._read_task, self._watch_task):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._writer.close()
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    # ---- internals ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise EngineError(ErrorCode.CONNECTION_LOST, "transport closed")

    def _fail(self, error: EngineError) -> EngineError:
        """Fail every pending send and receive with the channel's first error; returns that error."""
        if self._error is None:
            self._error = error
        for fut in [*self._send_done.values(), *(i.done for i in self._incoming.values())]:
            if not fut.done():
                fut.set_exception(self._error)
                fut.exception()
        return self._error

    async def _pace(self, left: int) -> int:
        """Wait for the token bucket; the bytes the next frame may carry."""
        while True:
            rate = max(self._rate.target_kbps, 1) * 125.0  # bytes per second
            size = int(min(self._read_size, max(MIN_CHUNK, rate * PACE_SLICE), left))
            now = time.monotonic()
            self._tokens = min(self._tokens + rate * (now - self._token_time), max(rate * BURST, CHUNK))
            self._token_time = now
            if self._tokens >= 0:
                self._tokens -= size
                return size
            await asyncio.sleep(min(-self._tokens / rate, PACE_SLICE))

    def _emit(self, type_: int, body: bytes) -> None:
        sealed = self._seal.seal(type_, body, _usec(), 0)
        self._writer.write(httpframes.encode_frame(sealed, self._jpeg))
        self._counters["datagrams_sent"] += 1
        self._last_sent = time.monotonic()

    async def _watch(self) -> None:
        while self._error is None:
            await asyncio.sleep(KEEPALIVE / 2)
            now = time.monotonic()
            if now - self._last_sent >= KEEPALIVE:
                self._emit(datagram.FEEDBACK, datagram.pack_feedback(datagram.Feedback(0, 0.0)))
            if (self._send_done or self._incoming) and now - self._last_heard > self.peer_timeout:
                self._fail(
                    EngineError(
                        ErrorCode.CONNECTION_LOST, f"nothing from the peer over {self.name} for {self.peer_timeout:g}s"
                    )
                )

    async def _read_loop(self, buffered: bytes) -> None:
        try:
            data = buffered
            while True:
                if data:
                    for frame in self._decoder.feed(data):
                        self._on_frame(frame)
                data = await self._reader.read(READ_SIZE)
                self._last_heard = time.monotonic()
                if not data:
                    what = "mid-frame" if self._decoder.pending else "without CLOSE"
                    self._fail(EngineError(ErrorCode.CONNECTION_LOST, f"the HTTP fallback connection ended {what}"))
                    return
        except EngineError as exc:
            self._fail(exc)
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            self._fail(EngineError(ErrorCode.CONNECTION_LOST, f"HTTP fallback connection lost: {exc}"))

    def _on_frame(self, frame: bytes) -> None:
        try:
            type_, _seq, _ts, _echo, body = self._seal.open(frame)
        except Rejected as exc:
            # on UDP a stranger's datagram is dropped; inside our TCP stream it means the stream is not ours
            self._counters["datagrams_rejected"] += 1
            raise EngineError(
                ErrorCode.CONNECTION_ERROR_HTTP, f"rejected a frame on the HTTP fallback channel: {exc}"
            ) from None
        self._counters["datagrams_received"] += 1
        if type_ == datagram.DATA:
            self._on_data(*datagram.parse_data(body))
        elif type_ == datagram.FEEDBACK:
            for report in datagram.parse_feedback(body).files:
                fut = self._send_done.get(report.file_id)
                if report.complete and fut is not None and not fut.done():
                    fut.set_result(None)
        elif type_ == datagram.CLOSE:
            self._fail(
                EngineError(
                    ErrorCode.CONNECTION_LOST, f"peer closed the data channel (code {datagram.parse_close(body)})"
                )
            )

    def _on_data(self, file_id: int, offset: int, payload: memoryview) -> None:
        inc = self._incoming.get(file_id)
        if inc is None or inc.done.done() or offset < inc.start or offset + len(payload) > inc.end:
            self._counters["datagrams_unknown_file"] += 1
            return
        step = self._write_size or len(payload)
        try:
            for pos in range(0, len(payload), step):
                os.pwrite(inc.fd, payload[pos : pos + step], offset + pos)
        except OSError as exc:
            inc.done.set_exception(EngineError(ErrorCode.DISK_WRITE, f"write failed: {exc}"))
            return
        inc.got += len(payload)
        self._counters["bytes_received"] += len(payload)
        if inc.on_progress is not None:
            try:
                inc.on_progress(len(payload))
            except Exception as exc:  # the caller's callback failed: its receive fails, not the session
                inc.done.set_exception(exc)
                return
        if inc.got >= inc.end - inc.start:
            self._emit(
                datagram.FEEDBACK,
                datagram.pack_feedback(
                    datagram.Feedback(0, 0.0, [datagram.FileReport(file_id, inc.end, [], complete=True)])
                ),
            )
            inc.done.set_result(None)


def _pread(fd: int, size: int, offset: int) -> bytes:
    try:
        block = os.pread(fd, size, offset)
    except OSError as exc:
        raise EngineError(ErrorCode.DISK_READ, f"read failed: {exc}") from None
    if len(block) != size:
        raise EngineError(ErrorCode.DISK_READ, "source file shorter than announced")
    return block


# ---- client: dialling the fallback port ---------------------------------------------------------------


async def dial(
    host: str,
    port: int,
    *,
    session_id: str,
    token: str,
    jpeg: bool,
    cafile: str | None,
    keyfile: str | None,
    proxy: tuple[str, int] | None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, str]:
    """Open the fallback channel: (reader, writer, bytes already read past the answer, "http"/"https").

    ``cafile`` (-I) turns TLS on and is what the server's certificate must verify against; with
    ``keyfile`` (-Y) the same certificate and that key are our client certificate (mutual TLS).
    Every failure is EngineError(47) saying which step failed."""
    where = f"{host}:{port}" + (f" through proxy {proxy[0]}:{proxy[1]}" if proxy else "")
    try:
        return await asyncio.wait_for(_dial(host, port, session_id, token, jpeg, cafile, keyfile, proxy), DIAL_TIMEOUT)
    except TimeoutError:
        raise EngineError(
            ErrorCode.CONNECTION_ERROR_HTTP, f"HTTP fallback to {where}: no answer within {DIAL_TIMEOUT:g}s"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise EngineError(
            ErrorCode.CONNECTION_ERROR_HTTP,
            f"HTTPS fallback to {where}: the server certificate "
            f"does not verify against -I {cafile}: "
            f"{exc.verify_message}",
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise EngineError(ErrorCode.CONNECTION_ERROR_HTTP, f"HTTP fallback to {where} failed: {exc}") from None
    except httpframes.HttpWireError as exc:
        raise EngineError(ErrorCode.CONNECTION_ERROR_HTTP, f"HTTP fallback to {where}: {exc.description}") from None


async def _dial(
    host: str,
    port: int,
    session_id: str,
    token: str,
    jpeg: bool,
    cafile: str | None,
    keyfile: str | None,
    proxy: tuple[str, int] | None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, str]:
    reader, writer = await asyncio.open_connection(*(proxy or (host, port)))
    try:
        buffered = b""
        if proxy:
            writer.write(httpframes.connect_request(host, port))
            head, buffered = await _read_head(reader)
            status = httpframes.status_of(head)
            if status != 200:
                raise httpframes.HttpWireError(f"the proxy answered CONNECT with {status} {head.start[2]}")
        if cafile:
            if buffered:
                raise httpframes.HttpWireError("the proxy sent bytes before the TLS handshake")
            context = ssl.create_default_context(cafile=cafile)
            if keyfile:
                context.load_cert_chain(cafile, keyfile)
            await writer.start_tls(context, server_hostname=host)
        writer.write(httpframes.request(session_id, token, host, port, jpeg))
        head, buffered = await _read_head(reader, buffered)
        status = httpframes.status_of(head)
        if status != 101:
            reason = buffered.decode(errors="replace").strip()[:200] or head.start[2]
            raise httpframes.HttpWireError(f"the server refused the fallback: {status} {reason}")
        return reader, writer, buffered, "https" if cafile else "http"
    except BaseException:
        writer.close()
        raise


async def _read_head(reader: asyncio.StreamReader, buffered: bytes = b"") -> tuple[httpframes.Head, bytes]:
    buf = buffered
    while (found := httpframes.split_head(buf)) is None:
        data = await reader.read(4096)
        if not data:
            raise httpframes.HttpWireError("the connection closed before an HTTP answer")
        buf += data
    head, rest = found
    if rest and httpframes.status_of(httpframes.parse_head(head)) >= 400:
        with contextlib.suppress(Exception):  # an error's short reason body, for the message
            rest += await asyncio.wait_for(reader.read(4096), 0.5)
    return httpframes.parse_head(head), rest


# ---- server engine: registering with fasp-server ------------------------------------------------------

SOCKET_ENV = "FASP_FALLBACK_SOCKET"
ACCEPT_TIMEOUT = 30.0


class Registration:
    """A server engine's claim on fasp-server's fallback port for one session.

    Over fasp-server's Unix socket: the engine writes one JSON line (session id, one-time token);
    fasp-server answers ``{"ok": true}`` once it would accept that client, then
    ``{"ok": true, "transport": "http"|"https"}`` once the client came, and relays raw frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, socket_path: str, session_id: str, token: str) -> Registration:
        """Registered: from now on the client may dial."""
        try:
            reader, writer = await asyncio.open_unix_connection(socket_path)
        except OSError as exc:
            raise EngineError(
                ErrorCode.CONNECTION_ERROR_HTTP, f"cannot reach fasp-server's fallback socket: {exc.strerror}"
            ) from None
        self = cls(reader, writer)
        writer.write(json.dumps({"session": session_id, "token": token}).encode() + b"\n")
        await self._answer(10.0, "fasp-server did not acknowledge the registration")
        return self

    async def wait(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        """Our client's authenticated stream: (reader, writer, "http"/"https")."""
        answer = await self._answer(ACCEPT_TIMEOUT, "no client reached the HTTP fallback port")
        return self._reader, self._writer, str(answer["transport"])

    async def _answer(self, timeout: float, silence: str) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(self._reader.readline(), timeout)
            answer = json.loads(line) if line else {"error": "fasp-server closed the fallback socket"}
        except TimeoutError:
            self._writer.close()
            raise EngineError(ErrorCode.CONNECTION_ERROR_HTTP, f"{silence} within {timeout:g}s") from None
        except (ValueError, OSError) as exc:
            answer = {"error": str(exc)}
        if not isinstance(answer, dict):
            answer = {"error": "malformed answer"}
        if not answer.get("ok"):
            self._writer.close()
            raise EngineError(
                ErrorCode.CONNECTION_ERROR_HTTP,
                f"HTTP fallback refused by fasp-server: {answer.get('error', 'no reason given')}",
            )
        return answer
