"""Sessions: run an ascp-compatible program and steer it through the management port.

The port is judged per connection (``admission``): only the session's own program is admitted, by the secret
it was handed in ``FASPMANAGER_MGMT_SECRET`` or, for a program that knows none, by the socket's owner.

Threads, kept to the minimum: the caller's thread starts, commands and
finishes; one reader thread decodes the program's events (``mgmt.Decoder``)
into ``Progress``; one dispatch thread hands events to the listener, so a slow
listener never stalls the reader (and so never the program).
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

from . import forkserver
from .admission import Admission, Caller
from .codes import ErrorCode
from .constants import SessionState, TransferEventType
from .errors import InvalidPathError, SessionStartError, SessionStateError, StreamStateError
from .locate import is_our_engine, locate_ascp, runs_here
from .mgmt import SECRET_ENV, MgmtProtocolError, encode
from .orders import BaseTransferOrder, PathArg, StreamUpload
from .progress import Progress, SessionResult, TransferEvent

log = logging.getLogger(__name__)

Listener = Callable[[TransferEvent], object]
"""A session's listener: called with each event, on the session's dispatch thread."""

STDERR_TAIL_BYTES = 2000
"""How much of a dead program's stderr a failure reason quotes."""


Process = subprocess.Popen[bytes] | forkserver.ForkedProcess
"""The program of a session: exec'd, or forked warm."""


def _start_timeout() -> float:
    return float(os.environ.get("FASPMANAGER_START_TIMEOUT", "15"))


def _warm() -> bool:
    """$FASPMANAGER_WARM=1: start our engine by fork from a warm one (off by default; workers turn it on)."""
    return os.environ.get("FASPMANAGER_WARM", "0").lower() in ("1", "true", "yes", "on")


class MgmtConnection:
    """The accepted management socket; sends are serialised so frames never interleave.

    ``escape``: the program presented the session's secret, so it is ours and undoes the codec's escape of
    control characters (a path with a newline can be sent); IBM's ascp would take the escape literally.
    """

    def __init__(self, sock: socket.socket, escape: bool = False) -> None:
        self.sock = sock
        self.escape = escape
        self._lock = threading.Lock()

    def send(self, frame_type: str, fields: Mapping[str, object] | None = None, payload: bytes = b"") -> None:
        data = encode(frame_type, fields or {}, payload, escape=self.escape)
        with self._lock:
            self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _order_problem(order: object) -> str | None:
    """Why ``order`` cannot be run (None when it can): not an order at all, or the bare base class, which names
    no transfer (start() would fail on it with a bare NotImplementedError)."""
    if isinstance(order, BaseTransferOrder) and type(order) is not BaseTransferOrder:
        return None
    return f"order must be an instance of a BaseTransferOrder subclass (FileUpload...), got {type(order).__name__}"


def _session_for(order: BaseTransferOrder) -> str:
    """The session class that runs ``order``: a keepalive order's files come through the management port."""
    if isinstance(order, StreamUpload):
        return "StreamSession"
    return "PersistentSession" if order._keepalive else "Session"


class Session:
    """A class for executing Aspera FASP transfers: start, monitor, steer, finish, close."""

    _runs = "Session"
    """The orders this class runs, as ``_session_for`` names them."""

    start_timeout: float | None = None
    """Seconds the program has to connect to the management port (None: $FASPMANAGER_START_TIMEOUT or 15)."""
    stop_timeout = 5.0
    """Seconds close() waits after SIGTERM before SIGKILL."""
    extended_events = False
    """True (on an instance before start(), or a subclass): the listener also hears ExtraEventType events (START,
    NOTIFICATION), which the reference's TransferEventType does not name; their stats are kept either way."""
    max_pending_stats = 1000
    """STATS events queued for a slow listener beyond this are dropped (stats() still has them): memory stays
    bounded however long the listener takes, and no other event type is ever dropped."""

    def __init__(
        self,
        order: BaseTransferOrder,
        ascp_path: PathArg | None = None,
        listener: Listener | None = None,
        port: int | None = None,
    ) -> None:
        problem = _order_problem(order)
        if problem is not None:
            raise TypeError(problem)
        wanted = _session_for(order)
        if wanted != self._runs:  # Session on a keepalive order: nobody would send the DONE it waits for
            raise TypeError(
                f"{type(self).__name__} cannot run a {type(order).__name__}: "
                f"use {wanted} (or faspmanager.session(), which picks it)"
            )
        self.order = order
        self.ascp_path = ascp_path
        self.listener = listener
        self.port = port
        self._lock = threading.RLock()
        self._progress = Progress()
        self._concluded = threading.Event()
        self._started = False
        self._closed = False
        self._pending: list[tuple[str, Mapping[str, object] | None]] = []
        """Commands given while start() connects, sent as soon as the program is admitted."""
        self._cancelled = False  # cancel() while start() connects: start() gives up (see _accept)
        self._result: SessionResult | None = None
        self._process: Process | None = None
        self._conn: MgmtConnection | None = None
        self._workdir: str | None = None
        self._events: queue.Queue[TransferEvent | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the program with ``-M PORT`` and wait (bounded) for it to connect back."""
        with self._lock:
            if self._started:
                raise SessionStateError("session already started")
            if self._closed:
                raise SessionStateError("session is closed")
            command = locate_ascp(self.ascp_path)
            ours = is_our_engine(command)
            # the order's command line before the session counts as started: an option found wrong only now
            # raises here and leaves the session to be fixed and started again
            workdir = tempfile.mkdtemp(prefix="faspmanager-")
            try:
                order_args = self.order._ascp_args(workdir, our_engine=ours)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
            self._workdir = workdir
            self._started = True
            self._progress.started()  # RUNNING while it connects: steering calls are queued, not refused
        self.ascp_path = command[0] if self.ascp_path is None else self.ascp_path
        try:
            server = self._listen()
            try:
                secret = secrets.token_hex(32)
                # only our engine presents the secret (and drops it from its environment); IBM's ascp would keep
                # it in its /proc environ for any process of the user to read: it is admitted by its process tree
                argv = [*command, "-M", str(self.port), *order_args]
                env = {**os.environ, **self.order.ascp_env(), **({SECRET_ENV: secret} if ours else {})}
                process = self._process = self._run(command, argv, env)
                caller = self._accept(Admission(server, secret, process.pid, ours), process)
            finally:
                server.close()
        except BaseException as exc:
            self._end_process()
            cancelled = {"code": int(ErrorCode.USER_CANCEL)} if self._cancelled else {}
            self._conclude(f"session did not start: {exc}", **cancelled)
            self._remove_files()
            raise
        sock = caller.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = MgmtConnection(sock, escape=caller.authenticated)
        with self._lock:
            self._conn = conn
            pending, self._pending = self._pending, []
            if self._cancelled:  # it came as the program was admitted
                pending.append(("CANCEL", None))
        for frame_type, fields in pending:
            conn.send(frame_type, fields)
        if self.listener is not None:
            self._dispatcher = threading.Thread(
                target=self._dispatch, args=(self.listener,), name="faspmanager-listener", daemon=True
            )
            self._dispatcher.start()
        self._reader = threading.Thread(target=self._read, args=(caller,), name="faspmanager-reader", daemon=True)
        self._reader.start()

    def _run(self, command: list[str], argv: list[str], env: dict[str, str]) -> Process:
        """The program, in its own session: forked from the warm engine when $FASPMANAGER_WARM allows and the
        command is our engine on this interpreter (forkserver), else a plain exec."""
        with open(self._stderr_path(), "wb") as stderr:
            if _warm() and runs_here(command):
                try:
                    with open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
                        return forkserver.shared(forkserver.WARM_MODULE).spawn(
                            ["fasp-ascp", *argv[len(command) :]],
                            env,
                            null_in.fileno(),
                            null_out.fileno(),
                            stderr.fileno(),
                            cwd=os.getcwd(),
                        )
                except OSError as exc:  # no fork server: the engine still runs, exec'd
                    log.warning("warm engine unavailable (%s): starting %s", exc, command[0])
            return subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )

    def _listen(self) -> socket.socket:
        """The management port: loopback only, so no other host can steer the transfer."""
        try:
            server = socket.create_server(("127.0.0.1", self.port or 0), backlog=64)
        except OSError as exc:
            raise SessionStartError(f"cannot listen on 127.0.0.1:{self.port or 0}: {exc}") from exc
        self.port = server.getsockname()[1]
        return server

    def _accept(self, admission: Admission, process: Process) -> Caller:
        """Wait (bounded) for the program's own connection; strangers are dropped meanwhile (see admission)."""
        timeout = self.start_timeout if self.start_timeout is not None else _start_timeout()
        deadline = time.monotonic() + timeout
        try:
            while True:
                status = process.poll()  # before the round: what an exited program wrote is still judged
                caller = admission.poll(0 if status is not None else 0.05)
                if caller is not None:
                    return caller
                if self._cancelled:
                    raise SessionStartError("cancelled by the manager before the program connected")
                dropped = (
                    f" (dropped {len(admission.dropped)} connection(s): {admission.dropped[-1]})"
                    if admission.dropped
                    else ""
                )
                if status is not None:
                    raise SessionStartError(
                        f"{self.ascp_path} exited with status {status} before "
                        f"{'it was admitted on' if dropped else 'connecting to'} the management port{dropped}: "
                        f"{self._stderr_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise SessionStartError(
                        f"{self.ascp_path} did not connect to management port {self.port} within {timeout:g} s{dropped}"
                    )
        finally:
            admission.close()

    def finish(self) -> SessionResult:
        """Block until the transfer concludes; the same SessionResult on every call."""
        if not self._started:
            raise SessionStateError("session not started")
        self._concluded.wait()
        with self._lock:
            if self._result is None:
                self._result = self._progress.result()
            return self._result

    def close(self) -> None:
        """End the program (terminate, then kill), free the socket, join threads; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._end_process()
        if self._conn is not None:
            self._conn.close()
        if self._reader is not None:
            self._reader.join(self.stop_timeout)
        self._conclude("session closed before the transfer concluded")
        if self._dispatcher is not None:
            self._events.put(None)
            if self._dispatcher is not threading.current_thread():
                self._dispatcher.join(self.stop_timeout)
        self._remove_files()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- monitoring ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Session-level statistics (snake_case keys, typed values) plus 'state'."""
        with self._lock:
            return self._progress.snapshot()

    def state(self) -> SessionState:
        state: SessionState = self.stats()["state"]  # always there, from NOTSTARTED on
        return state

    def file_stats(self, filename: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            if filename is not None:
                stats = self._progress.files.get(filename)
                return None if stats is None else dict(stats)
            return {name: dict(stats) for name, stats in self._progress.files.items()}

    def failed_files(self) -> list[str]:
        with self._lock:
            return self._progress.failed_files()

    @property
    def pid(self) -> int | None:
        """The transfer program's process id (None before start)."""
        return None if self._process is None else self._process.pid

    # -- commands ------------------------------------------------------------------------------

    def set_rate(self, target_kbps: int) -> bool:
        """Send RATE: the new target in kilobits per second, as target_rate_kbps and ascp's -l (a percent of the
        detected capacity with auto_detect_capacity); False once the session concluded. There is no pause:
        a target under 1 is a ValueError, as the program would refuse it."""
        if isinstance(target_kbps, bool) or not isinstance(target_kbps, int) or target_kbps < 1:
            raise ValueError(f"target_kbps must be an int of at least 1 (kbit/s), got {target_kbps!r}")
        return self._command("RATE", {"Rate": target_kbps})

    def cancel(self) -> bool:
        """Send CANCEL; False once the session concluded."""
        return self._command("CANCEL")

    def _command(self, frame_type: str, fields: Mapping[str, object] | None = None) -> bool:
        """Send a command; while start() is still connecting, RATE waits for the connection and CANCEL makes
        start() give up (a program stuck connecting is ended, not waited for)."""
        with self._lock:
            if not self._started:
                raise SessionStateError("session not started")
            if self._concluded.is_set() or self._closed:
                return False
            if self._conn is None:
                if frame_type == "CANCEL":
                    self._cancelled = True
                else:
                    self._pending.append((frame_type, fields))
                return True
            conn = self._conn
        conn.send(frame_type, fields)
        return True

    def _connection(self) -> MgmtConnection:
        """The program's management connection; SessionStateError while start() has not made it yet."""
        if self._conn is None:
            raise SessionStateError("session not started")
        return self._conn

    # -- threads -------------------------------------------------------------------------------

    def _read(self, caller: Caller) -> None:
        """Fold the program's frames in, starting with those it sent while being admitted."""
        frames, error = caller.frames, caller.error
        try:
            while True:
                for frame in frames:
                    with self._lock:
                        event = self._progress.apply(frame)
                        if self._progress.concluded:
                            self._concluded.set()
                    if (
                        event is not None
                        and self.listener is not None
                        and (self.extended_events or isinstance(event.event_type, TransferEventType))
                        and not (event.event_type == "STATS" and self._events.qsize() >= self.max_pending_stats)
                    ):
                        self._events.put(event)
                if error is not None:
                    raise error
                data = caller.sock.recv(65536)  # the management connection's socket
                if not data:
                    break
                frames = caller.decoder.feed(data)
        except MgmtProtocolError as exc:
            self._conclude(f"{self.ascp_path} broke the management protocol: {exc}")
            self._end_process()
        except OSError:
            pass  # close() shut the socket
        self._disconnected()

    def _disconnected(self) -> None:
        """The program hung up: reap it; if it never said DONE or ERROR, the session failed, and why."""
        process = self._process
        assert process is not None  # the reader runs only after start() ran the program
        try:
            status: int | None = process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:  # a program without its management connection is of no use
            self._end_process()
            status = process.poll()
        if self._closed:
            self._conclude("session closed before the transfer concluded")
        else:
            self._conclude(
                f"{self.ascp_path} exited with status {status} without reporting DONE or ERROR: {self._stderr_tail()}",
                exit_status=status,
            )
        self._remove_files()  # the program is gone: its path lists and stderr served their purpose
        if self._dispatcher is not None:
            self._events.put(None)

    def _conclude(self, description: str, **details: object) -> None:
        """End the session as FAILED unless the program already ended it (the first verdict wins); the listener
        gets the verdict's ERROR event, ahead of the dispatcher's end, which every caller queues after this."""
        with self._lock:
            event = self._progress.fail(description, **details)
            if event is not None and self._dispatcher is not None:
                self._events.put(event)
            self._concluded.set()

    def _dispatch(self, listener: Listener) -> None:
        while (event := self._events.get()) is not None:
            try:
                listener(event)
            except Exception:
                log.exception("faspmanager listener raised on %s", event.event_type)

    # -- process -------------------------------------------------------------------------------

    def _end_process(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                if isinstance(process, forkserver.ForkedProcess):
                    process.signal_group(sig)
                else:
                    os.killpg(process.pid, sig)  # its own group: also ends an ssh it spawned
            except ProcessLookupError:
                return
            try:
                process.wait(self.stop_timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def _remove_files(self) -> None:
        """Remove the session's directory (path lists, stderr), even when close() is never called."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _stderr_path(self) -> str:
        assert self._workdir is not None  # made by start() before the program runs
        return os.path.join(self._workdir, "stderr.log")

    def _stderr_tail(self) -> str:
        try:
            with open(self._stderr_path(), "rb") as err:
                err.seek(0, os.SEEK_END)
                err.seek(max(0, err.tell() - STDERR_TAIL_BYTES))
                tail = err.read().decode("utf-8", "replace").strip()
        except OSError:
            tail = ""
        return tail or "(no stderr output)"


class _KeepaliveSession(Session):
    """A session whose files arrive through the management port; finish() sends DONE first."""

    def __init__(
        self,
        order: BaseTransferOrder,
        ascp_path: PathArg | None = None,
        listener: Listener | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(order, ascp_path=ascp_path, listener=listener, port=port)
        self._finishing = False

    def _require_running(self) -> None:
        if not self._started:
            raise SessionStateError("session not started")
        if self._finishing or self._closed or self._concluded.is_set():
            raise SessionStateError("session already finished or closed")

    def _send(self, frame_type: str, fields: Mapping[str, object]) -> None:
        try:
            self._connection().send(frame_type, fields)
        except MgmtProtocolError as exc:
            raise InvalidPathError(str(exc)) from None

    def finish(self) -> SessionResult:
        """Send DONE (once): the program completes what it has, then ends; then wait for the result."""
        if not self._started:
            raise SessionStateError("session not started")
        with self._lock:
            send_done = not (self._finishing or self._closed or self._concluded.is_set())
            self._finishing = True
        if send_done:
            self._before_done()
            try:
                self._connection().send("DONE")
            except OSError:
                pass  # the program is gone; the reader records why
        return super().finish()

    def _before_done(self) -> None:
        """Hook for what must reach the program before DONE."""


class PersistentSession(_KeepaliveSession):
    """A persistent Session: sources are added with add_source until finish()."""

    _runs = "PersistentSession"

    def add_source(
        self, source_path: PathArg, dest_path: PathArg, start_offset: int | None = None, end_offset: int | None = None
    ) -> None:
        """Send START: transfer one more file (bytes [start_offset, end_offset) when given; with
        content_protection_passphrase a file travels whole, so a range of it fails that file, USAGE)."""
        self._require_running()
        for name, offset in (("start_offset", start_offset), ("end_offset", end_offset)):
            if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int) or offset < 0):
                raise ValueError(f"{name} must be a non-negative int, got {offset!r}")
        if start_offset is not None and end_offset is not None and end_offset < start_offset:
            raise ValueError(f"end_offset {end_offset} is before start_offset {start_offset}")
        self._send(
            "START",
            {
                "Source": os.fspath(source_path),
                "Destination": os.fspath(dest_path),
                "StartByte": start_offset,
                "EndByte": end_offset,
            },
        )


class Stream:
    """A write-only, socket-like interface for stream-to-file transfers (PUT, WRITE..., CLOSE)."""

    def __init__(self, dest_path: PathArg, mgmt_conn: MgmtConnection, chunk_size: int) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.dest_path = os.fspath(dest_path)
        self.mgmt_conn = mgmt_conn
        self.chunk_size = chunk_size
        self._state = "new"

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    def open(self) -> None:
        """Opens the stream to the destination file (PUT)."""
        if self._state != "new":
            raise StreamStateError(f"stream to {self.dest_path} was already opened")
        try:
            self.mgmt_conn.send("PUT", {"Destination": self.dest_path, "ChunkSize": self.chunk_size})
        except MgmtProtocolError as exc:
            raise InvalidPathError(str(exc)) from None
        self._state = "open"

    def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send bytes (str is UTF-8 encoded) as WRITE frames of at most chunk_size bytes."""
        if self._state != "open":
            raise StreamStateError(f"stream to {self.dest_path} is not open")
        view = memoryview(data.encode("utf-8") if isinstance(data, str) else data).cast("B")
        for offset in range(0, len(view), self.chunk_size):
            self.mgmt_conn.send("WRITE", payload=bytes(view[offset : offset + self.chunk_size]))

    def close(self) -> None:
        """Send CLOSE; later calls do nothing."""
        if self._state == "new":
            raise StreamStateError(f"stream to {self.dest_path} was never opened")
        if self._state == "open":
            self._state = "closed"
            self.mgmt_conn.send("CLOSE")


class StreamSession(_KeepaliveSession):
    """A Session for stream-to-file transfers: open_stream() gives a writable Stream."""

    _runs = "StreamSession"

    def __init__(
        self,
        order: BaseTransferOrder,
        chunk_size: int,
        ascp_path: PathArg | None = None,
        listener: Listener | None = None,
        port: int | None = None,
    ) -> None:
        super().__init__(order, ascp_path=ascp_path, listener=listener, port=port)
        self.chunk_size = chunk_size
        self._stream: Stream | None = None

    def open_stream(self, dest_path: PathArg) -> Stream:
        """Create dest_path (relative to the destination root) and return its open Stream."""
        self._require_running()
        if self._stream is not None and self._stream.is_open:
            raise StreamStateError(f"close the stream to {self._stream.dest_path} before opening another")
        stream = Stream(dest_path, self._connection(), self.chunk_size)
        stream.open()
        self._stream = stream
        return stream

    def _before_done(self) -> None:
        if self._stream is not None and self._stream.is_open:
            self._stream.close()
