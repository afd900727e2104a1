"""Warm engines: start our engine by fork from a process that has already imported it.

A new Python engine costs a fresh interpreter and its imports (about 0.25 CPU s) before it moves a byte;
for many small transfers that is most of the work. A *fork server* is one long-lived process per host
program (a worker, fasp-server) that imported the engine once; each engine is a fork of it, running the
engine's ``main(argv)`` with the argv, environment, work directory and stdin/stdout/stderr its launcher
passed over a Unix socket (the descriptors as SCM_RIGHTS). Nothing else changes: the engine still reads its
command line, connects to the management port, exits with ascp's codes.

Process semantics kept from a plain exec: each engine is a session and process group leader (a signal to
the group reaches whatever it starts); ``ForkedProcess`` answers poll/wait/pid like ``subprocess.Popen``;
signals go through the server, which applies them only to a child it has not reaped (no pid-reuse race);
an engine whose launcher's connection closes (the launcher died) is killed; the server exits when the
process that started it is gone (its stdin, a pipe only that process holds, reads EOF: unlike
PR_SET_PDEATHSIG this does not depend on which thread started it), and each engine dies with the server
(PR_SET_PDEATHSIG; the server is single-threaded), so nothing outlives its host.

The server is single-threaded (a selector and SIGCHLD's wakeup fd), so fork is safe; secrets reach it only
over its 0600 socket (never argv) and never sit in a fork's initial environment block.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import fcntl
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, NoReturn

from faspmanager.envblock import ARGUMENTS, own_area

WARM_MODULE = "fasp.cli.warm"
"""Our engine's fork server (``python -m fasp.cli.warm PATH``)."""

MAX_MESSAGE = 1 << 20
"""Bytes of one request (argv and environment); a bigger one is refused."""
MAX_KEPT = 4
"""Descriptors besides stdio an engine may inherit at their launcher's numbers (fasp-server's usage pipe)."""

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the parent (the fork server) dies; exit now if it already did. SIGKILL, not SIGTERM: an
    engine ending on SIGTERM reports a user's cancel (code 28, final), while a killed one is a lost session
    that its launcher retries."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def exit_now(code: int) -> NoReturn:
    """End this engine process with ``code`` at once, its standard streams flushed first. What must outlive it
    is out already (files and sockets closed, logs written through); tearing the interpreter down, every module
    and object freed one by one, cost each engine about 50 ms, and in a fork it would run the parent's atexit
    handlers."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a reader gone: nothing more can reach it
            pass
    os._exit(code)


ARGV_ROOM = 4096
"""Bytes of blank argument the server is started with, so that each fork can show its own argv in that room."""


def _show_argv(argv: Sequence[str]) -> None:
    """Write ``argv`` (NUL-separated, cut to fit) over this process's own argument area, so that ps and
    /proc/PID/cmdline show the engine's command line, not the fork server's; a no-op without /proc."""
    area = own_area(ARGUMENTS)
    if area is None:
        return
    start, end = area
    text = b"\0".join(os.fsencode(a) for a in argv)[: end - start - 1]
    ctypes.memmove(start, text.ljust(end - start, b"\0"), end - start)


def _send(sock: socket.socket, message: Mapping[str, object], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def _receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the descriptors it carried; (None, []) at EOF."""
    data, ancillary, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(max_fds * 4) if max_fds else 0)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), fds


# -- the server ---------------------------------------------------------------------------------


class _Server:
    def __init__(self, listener: socket.socket, entry: Callable[[list[str]], int]) -> None:
        self.listener = listener
        self.entry = entry
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, socket.socket | None] = {}  # pid -> its launcher's connection (None: gone)
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd hears it
        self.selector.register(listener, selectors.EVENT_READ, self._accept)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, self._reap)
        self.selector.register(0, selectors.EVENT_READ, self._parent_gone)

    def run(self) -> None:
        while True:
            for key, _ in self.selector.select():
                key.data(key.fileobj)

    def _parent_gone(self, _: object) -> None:
        if not os.read(0, 64):
            raise SystemExit(0)  # the engines get SIGKILL (PR_SET_PDEATHSIG)

    def _accept(self, _: object) -> None:
        conn, _ = self.listener.accept()
        try:
            request, fds = _receive(conn, max_fds=3 + MAX_KEPT)
        except (OSError, ValueError):
            conn.close()
            return
        kept = request.get("keep") if isinstance(request, dict) else None
        if (
            request is None
            or not isinstance(kept, list)
            or not all(isinstance(n, int) and n > 2 for n in kept)
            or len(fds) != 3 + len(kept)
        ):
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._child(me, request, fds)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        try:
            _send(conn, {"pid": pid})
        except OSError:
            self._launcher_gone(pid)
            return
        self.selector.register(conn, selectors.EVENT_READ, lambda c, p=pid: self._command(p, c))

    def _child(self, parent: int, request: dict[str, Any], fds: list[int]) -> None:
        """In the fork: become the engine the request describes; never returns."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            self.selector.close()
            self.listener.close()
            os.close(self.wakeup_r)
            os.close(self.wakeup_w)
            for conn in self.children.values():
                if conn is not None:
                    conn.close()
            os.setsid()
            _die_with_parent(parent)
            # the kept descriptors move out of the way first, above every number they are to take: one may sit
            # where another (or stdio) belongs, and a lowest-free dup could land on a target not yet placed
            above = max(request["keep"], default=2) + 1
            moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above) for fd in fds[3:]]
            for fd in fds[3:]:
                os.close(fd)
            for target, fd in enumerate(fds[:3]):
                os.dup2(fd, target)
                os.close(fd)
            for target, fd in zip(request["keep"], moved):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"] or "/")
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = list(request["argv"])
            _show_argv(sys.argv)
            code = self.entry(sys.argv[1:])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            exit_now(code)

    def _command(self, pid: int, conn: socket.socket) -> None:
        try:
            message, _ = _receive(conn)
        except (OSError, ValueError):
            message = None
        if message is None:
            self._launcher_gone(pid)
        elif "signal" in message and pid in self.children:
            _signal_group(pid, int(message["signal"]))

    def _launcher_gone(self, pid: int) -> None:
        conn = self.children.get(pid)
        if conn is not None:
            self._forget(conn)
            self.children[pid] = None
            _signal_group(pid, signal.SIGKILL)

    def _forget(self, conn: socket.socket) -> None:
        try:
            self.selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _reap(self, _: object) -> None:
        try:
            while os.read(self.wakeup_r, 512):
                pass
        except BlockingIOError:
            pass
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                try:
                    _send(conn, {"status": os.waitstatus_to_exitcode(status)})
                except OSError:
                    pass
                self._forget(conn)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def serve(path: str, entry: Callable[[list[str]], int]) -> None:
    """Listen on ``path`` (made 0600) and fork ``entry`` per request until stdin reads EOF; says ``ready`` on
    stdout once listening (the launcher waits for it). Leaving on that EOF it removes ``path`` and, if now
    empty, its directory: a launcher killed before it could close the server left both behind in /tmp."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(64)
    gc.freeze()  # what is loaded now stays out of every fork's collections (and its pages shared)
    print("ready", flush=True)
    try:
        _Server(listener, entry).run()
    finally:  # the server itself (a fork never returns here): its launcher is gone
        for remove, name in ((os.unlink, path), (os.rmdir, os.path.dirname(path))):
            with contextlib.suppress(OSError):
                remove(name)


# -- the launcher -------------------------------------------------------------------------------


class ForkedProcess:
    """An engine forked by the server, seen as ``subprocess.Popen`` sees a child: pid, poll, wait; plus
    ``signal_group`` (the server signals its process group while it runs)."""

    def __init__(self, conn: socket.socket, pid: int, args: Sequence[str]) -> None:
        self._conn: socket.socket | None = conn
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def fileno(self) -> int:
        """The connection to the server: readable when the engine's exit status arrived."""
        assert self._conn is not None
        return self._conn.fileno()

    def _take(self, timeout: float) -> None:
        conn = self._conn
        if conn is None:
            return
        conn.settimeout(timeout)
        try:
            message, _ = _receive(conn)
        except (TimeoutError, BlockingIOError):
            return
        except (OSError, ValueError):
            message = None
        # no status before EOF: the server died, and its PR_SET_PDEATHSIG ended the engine
        self.returncode = int(message["status"]) if message and "status" in message else -signal.SIGKILL
        self._conn = None
        conn.close()

    def poll(self) -> int | None:
        with self._lock:
            self._take(0)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self.returncode is not None:
                    return self.returncode
                left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                self._take(left)

    def signal_group(self, sig: int) -> None:
        """Signal the engine's process group, unless it already ended."""
        with self._lock:
            if self._conn is not None:
                try:
                    _send(self._conn, {"signal": int(sig)})
                except OSError:
                    pass


class ForkServer:
    """A fork server of this process, started on first use by ``python -m MODULE PATH`` (a module that
    imports the engine and calls ``serve``), and again if it died."""

    start_timeout = 30.0

    def __init__(self, module: str, python: str = sys.executable, env: Mapping[str, str] | None = None) -> None:
        self.module = module
        self.python = python
        self.env = dict(env) if env is not None else None  # the server's own (None: this process's)
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def path(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir, "fork.sock")

    @property
    def server_pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _ensure(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._stop()  # died: reap it, let its pipe go
        if self._dir is None or not os.path.isdir(self._dir):  # a server leaving by its own hand removes it
            self._dir = tempfile.mkdtemp(prefix="fasp-fork-")  # 0700
        if os.path.exists(self.path):
            os.unlink(self.path)
        process = subprocess.Popen(
            [self.python, "-m", self.module, self.path, " " * ARGV_ROOM],
            stdin=subprocess.PIPE,  # never written: its EOF tells the server this process is gone
            stdout=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )
        assert process.stdout is not None
        ready = _read_line(process.stdout, self.start_timeout)
        process.stdout.close()
        if ready != b"ready\n":
            process.kill()
            process.wait()
            raise OSError(f"fork server {self.module} did not start (said {ready!r})")
        self._process = process

    def start(self) -> None:
        """Start the server now (else the first spawn does); OSError if it does not come up."""
        with self._lock:
            self._ensure()

    def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        stdin: int,
        stdout: int,
        stderr: int,
        cwd: str | None = None,
        keep: Sequence[int] = (),
    ) -> ForkedProcess:
        """Fork an engine running ``argv`` (argv[0] its name), inheriting ``keep`` at the same descriptor numbers
        (as ``pass_fds`` does for an exec); OSError if the server cannot be reached."""
        if len(keep) > MAX_KEPT or any(fd <= 2 for fd in keep):
            raise ValueError(f"at most {MAX_KEPT} descriptors above stdio may be kept")
        with self._lock:
            for retry in (False, True):
                self._ensure()
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                try:
                    conn.connect(self.path)
                    _send(
                        conn,
                        {"argv": list(argv), "env": dict(env), "cwd": cwd, "keep": list(keep)},
                        [stdin, stdout, stderr, *keep],
                    )
                    conn.settimeout(self.start_timeout)
                    reply, _ = _receive(conn)
                except OSError:
                    conn.close()
                    if retry:
                        raise
                    self._stop()
                    continue
                if reply is None or "pid" not in reply:
                    conn.close()
                    raise OSError("fork server refused the request")
                return ForkedProcess(conn, int(reply["pid"]), argv)
        raise AssertionError("unreachable")

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            if self._process.stdin is not None:
                self._process.stdin.close()
            self._process = None

    def close(self) -> None:
        with self._lock:
            self._stop()
            if self._dir is not None:
                for remove, name in ((os.unlink, self.path), (os.rmdir, self._dir)):
                    with contextlib.suppress(FileNotFoundError):  # (the server may have removed them)
                        remove(name)
                self._dir = None


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    import select

    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            break
        chunk = os.read(stream.fileno(), 64)
        if not chunk:
            break
        line += chunk
    return line


_shared: dict[tuple[int, str], ForkServer] = {}
_shared_lock = threading.Lock()


def shared(module: str) -> ForkServer:
    """This process's fork server running ``module`` (one per process: a forked worker gets its own)."""
    key = (os.getpid(), module)
    with _shared_lock:
        server = _shared.get(key)
        if server is None:
            server = _shared[key] = ForkServer(module)
        return server


def main(entry: Callable[[list[str]], int], preload: Sequence[str] = ()) -> None:
    """``python -m <module> PATH [ROOM]``: import ``preload`` and serve ``entry`` (ROOM: blanks, see ARGV_ROOM)."""
    for name in preload:
        importlib.import_module(name)
    serve(sys.argv[1], entry)
