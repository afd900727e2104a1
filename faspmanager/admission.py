"""Who may be a session's management connection: its own program, never another local process.

The management port listens on 127.0.0.1, where any local user can connect; the
first connection used to win, so a stranger racing the program could forge INIT
and DONE and receive RATE/CANCEL and a stream's data. Each connection is now
judged on its own, without blocking the others:

* our engine presents the session's secret (``mgmt.SECRET_ENV`` in its
  environment, never on argv) in a first frame of its own (``mgmt.AUTH_FRAME``):
  the right secret admits it; a wrong one drops the connection;
* a program that knows no secret (IBM's ascp) is admitted only when the socket's
  other end belongs to the spawned process or one of its descendants. Linux has
  no SO_PEERCRED for TCP, so the peer's socket inode is read from
  /proc/net/tcp (the row whose local/remote ends are our connection's
  remote/local ends; the port is IPv4 only) and looked for among the fds of
  the child's process tree. A program that connects and exits at once may be
  gone before it is recognised: its connection is dropped (saying so) and the
  program counts as never having connected. Without
  /proc (not Linux) no connection passes this check: only a program that
  presents the secret is admitted there;
* while the program is known to be ours, a connection without the secret is
  dropped even from that tree (its ssh or hooks are no engine).

A caller's first frame must come within ``FIRST_FRAME_TIMEOUT`` seconds and
``FIRST_FRAME_BYTES`` bytes; callers are read without blocking, at most
``MAX_CALLERS`` at once (the oldest unverified one is dropped for a newcomer),
so a stranger can hold neither the listener nor the right program off.
"""

from __future__ import annotations

import hmac
import logging
import os
import selectors
import socket
import time
from collections import defaultdict

from .mgmt import AUTH_FRAME, Decoder, Frame, MgmtProtocolError

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT = 2.0
FIRST_FRAME_BYTES = 16 * 1024
MAX_CALLERS = 8


def _proc_address(host: str, port: int) -> str:
    """An IPv4 end as /proc/net/tcp writes it: the address's bytes in host order, then the port, in hex."""
    packed = socket.inet_aton(host)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def _peer_key(sock: socket.socket) -> tuple[str, str] | None:
    """The (local, remote) ends of ``sock``'s other end as a /proc/net/tcp row names them."""
    try:
        mine, theirs = sock.getsockname(), sock.getpeername()
    except OSError:
        return None
    return _proc_address(*theirs[:2]), _proc_address(*mine[:2])


def tcp_inodes() -> dict[tuple[str, str], int]:
    """Every IPv4 TCP socket of this network namespace that a process holds: (local, remote) -> inode."""
    try:
        with open("/proc/net/tcp") as table:
            rows = table.read().splitlines()[1:]
    except OSError:
        return {}
    inodes: dict[tuple[str, str], int] = {}
    for row in rows:
        cols = row.split()
        if len(cols) > 9 and cols[9] != "0":
            inodes[(cols[1], cols[2])] = int(cols[9])
    return inodes


def descendants(root: int) -> set[int]:
    """Every live descendant of ``root`` (parents read from /proc/PID/stat)."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children[ppid].append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children[todo.pop()]:
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` has open (from /proc/PID/fd; empty once it is gone)."""
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def owned_by_tree(socks: list[socket.socket], root: int) -> list[bool]:
    """For each connection, whether its other end is a socket of ``root`` or one of its descendants.

    One read of /proc for the whole batch (a flood costs one scan, not one each), and the child itself first:
    it is the usual owner, and the sooner it is looked at, the smaller the window in which a program that
    connects and exits at once is gone before it could be recognised."""
    if not socks:
        return []
    inodes = tcp_inodes()
    wanted = [None if (key := _peer_key(sock)) is None else inodes.get(key) for sock in socks]
    owned = socket_inodes(root)
    if not all(inode in owned for inode in wanted if inode is not None):
        for pid in descendants(root):
            owned |= socket_inodes(pid)
    return [inode is not None and inode in owned for inode in wanted]


def exited(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie not yet reaped, or gone): its sockets are closed."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


class Caller:
    """A connection not yet admitted: what it sent so far, read without blocking."""

    def __init__(self, sock: socket.socket, in_tree: bool, now: float, child_exited: bool = False):
        sock.setblocking(False)
        self.sock = sock
        self.port = sock.getpeername()[1]
        self.in_tree = in_tree
        self.child_exited = child_exited  # not in the tree because the program was already gone when judged
        self.deadline = now + FIRST_FRAME_TIMEOUT
        self.decoder = Decoder()
        self.frames: list[Frame] = []
        self.error: MgmtProtocolError | None = None
        self.received = 0
        self.closed = False
        self.authenticated = False  # presented the session's secret: the program is ours

    def read(self) -> None:
        while not (self.closed or self.error or self.received > FIRST_FRAME_BYTES):
            try:
                data = self.sock.recv(FIRST_FRAME_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            self.received += len(data)
            try:
                self.frames += self.decoder.feed(data)
            except MgmtProtocolError as exc:
                self.error = exc

    def settled(self, now: float) -> bool:
        """Whether enough is known to judge: a frame, garbage, a hang-up, too many bytes or too long."""
        return bool(
            self.frames or self.error or self.closed or self.received > FIRST_FRAME_BYTES or now >= self.deadline
        )

    def drop(self, port: int, reason: str) -> None:
        log.warning("management port %d: dropped the connection from 127.0.0.1:%d: %s", port, self.port, reason)
        self.sock.close()


class Admission:
    """Accepts connections on the management port until one is the session's own program."""

    def __init__(self, server: socket.socket, secret: str, child_pid: int, secret_required: bool):
        self.server = server
        self.port = server.getsockname()[1]
        self._secret = secret.encode()
        self._child = child_pid
        self._secret_required = secret_required
        self._callers: dict[socket.socket, Caller] = {}
        self.dropped: list[str] = []  # why each stranger was dropped, for the start error if none is admitted
        self._selector = selectors.DefaultSelector()
        server.setblocking(False)
        self._selector.register(server, selectors.EVENT_READ)

    def poll(self, wait: float) -> Caller | None:
        """One round: accept and read what is ready (within ``wait`` s); the admitted caller, if any.

        The admitted caller's socket is blocking again; its ``frames`` (the secret's frame removed) and
        ``error`` are what it sent so far, and its ``decoder`` goes on from there.
        """
        for key, _ in self._selector.select(wait):
            if key.fileobj is self.server:
                self._accept()
            elif key.fileobj in self._callers:
                self._callers[key.fileobj].read()
        now = time.monotonic()
        for caller in list(self._callers.values()):
            if caller.settled(now):
                self._forget(caller)
                reason = self._judge(caller)
                if reason is None:
                    caller.sock.setblocking(True)
                    return caller
                self.dropped.append(reason)
                caller.drop(self.port, reason)
        return None

    def _accept(self) -> None:
        """Take every connection waiting in the backlog; judge their origin (where it matters) in one /proc scan."""
        socks: list[socket.socket] = []
        while len(socks) < 4 * MAX_CALLERS:
            try:
                socks.append(self.server.accept()[0])
            except OSError:  # BlockingIOError: the backlog is empty
                break
        # a program that presents the secret needs no /proc scan: origin is judged only for one that cannot
        origins = [False] * len(socks) if self._secret_required else owned_by_tree(socks, self._child)
        gone = not self._secret_required and not all(origins) and exited(self._child)
        for sock, in_tree in zip(socks, origins):
            try:
                caller = Caller(sock, in_tree, time.monotonic(), child_exited=gone)
            except OSError:
                sock.close()
                continue
            if len(self._callers) >= MAX_CALLERS:
                oldest = min(self._callers.values(), key=lambda c: (c.in_tree, c.deadline))
                self._forget(oldest)
                oldest.drop(self.port, f"more than {MAX_CALLERS} connections waiting to be judged")
            self._callers[sock] = caller
            self._selector.register(sock, selectors.EVENT_READ)
            caller.read()  # a program that connected, wrote and exited is judged from what it left

    def _judge(self, caller: Caller) -> str | None:
        """None to admit the caller, else why it is dropped (never quoting what it presented)."""
        first = caller.frames[0] if caller.frames else None
        if first is not None and first.type == AUTH_FRAME:
            if not hmac.compare_digest((first.get("Secret") or "").encode(), self._secret):
                return "wrong management secret"
            caller.frames.pop(0)
            caller.authenticated = True
            return None
        if self._secret_required:
            return "no management secret, and this session's program presents one"
        if not caller.in_tree and caller.child_exited:
            return (
                f"no session's secret, and process {self._child} had exited before the connection was judged "
                "(a program that connects and exits at once cannot be told from a stranger)"
            )
        if not caller.in_tree:
            return f"neither the session's secret nor a socket of process {self._child} or its descendants"
        return None

    def _forget(self, caller: Caller) -> None:
        self._selector.unregister(caller.sock)
        del self._callers[caller.sock]

    def close(self) -> None:
        """Drop every caller still being judged; the listener itself is the session's to close."""
        for caller in list(self._callers.values()):
            self._forget(caller)
            caller.drop(self.port, "the session stopped listening")
        self._selector.close()
