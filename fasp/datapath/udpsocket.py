"""Non-blocking UDP socket that moves many datagrams per system call when Linux allows.

Sending uses UDP GSO (``UDP_SEGMENT``): a run of equal-size datagrams goes to
the kernel as one buffer and leaves as separate datagrams. Receiving uses UDP
GRO (``UDP_GRO``): the kernel hands back several datagrams of one size in one
buffer plus the segment size. Without either, plain sendto/recvfrom. Where GRO does not help (a path
that does not coalesce, as the WAN emulator's TUN), the compiled extension reads up to RECV_MESSAGES
datagrams with one ``recvmmsg`` into a buffer kept for it (:func:`_fastpath.recv_batch`); the pure-Python
path is one ``recvmsg`` per message.

For path MTU discovery (:mod:`fasp.datapath.pmtu`) the socket sets "don't fragment"
(``IP_PMTUDISC_DO``): the kernel then refuses a datagram larger than the path MTU
it knows (EMSGSIZE, raised as :class:`TooLarge`) instead of fragmenting it, and
:meth:`UdpSocket.path_max` says what that path MTU allows.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from fasp.datapath.datagram import Buffer
from fasp.datapath.seal import FASTPATH

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
MAX_GSO_SEGMENTS = 64
MAX_GSO_BYTES = 65000
RECV_BUFFER = 65536
RECV_MESSAGES = 64  # messages one recv_batch reads at most (the compiled path's limit too)
SOCKET_BUFFER = 16 << 20
IP_MTU_DISCOVER, IP_MTU, IPV6_MTU_DISCOVER, IPV6_MTU, PMTUDISC_DO = 10, 14, 23, 24, 2  # <linux/in.h>, in6.h
_U16 = struct.Struct("=H")
_INT = struct.Struct("=i")


def _enlarge(sock: socket.socket, force_opt: int, opt: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, SOCKET_BUFFER)  # root may exceed rmem_max/wmem_max
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)


class TooLarge(OSError):
    """The kernel refused a datagram of ``size`` bytes as larger than the path MTU allows."""

    def __init__(self, size: int):
        super().__init__(errno.EMSGSIZE, f"a datagram of {size} bytes exceeds the path MTU")
        self.size = size


class UdpSocket:
    """A bound, non-blocking UDP socket with batch send/receive."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setblocking(False)
        _enlarge(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF)
        _enlarge(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF)
        self.gso = self._probe_gso()
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            self.gro = True
        except OSError:
            self.gro = False
        self._anc = socket.CMSG_SPACE(_INT.size)
        self.fastpath = FASTPATH
        self._recv_buffer = bytearray()  # recvmmsg's, sized by recv_batch when it first reads

    @classmethod
    def bind(cls, host: str, port: int) -> UdpSocket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
            return cls(sock)
        except BaseException:
            sock.close()
            raise

    def discover_path_mtu(self) -> None:
        """Never fragment: datagrams larger than the path MTU are refused (:class:`TooLarge`)."""
        if self.sock.family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_DO)
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC_DO)

    def path_max(self, addr: tuple[Any, ...]) -> int | None:
        """The largest UDP payload the kernel's path MTU towards ``addr`` allows (None: it does not say)."""
        v6 = self.sock.family == socket.AF_INET6
        try:
            with socket.socket(self.sock.family, socket.SOCK_DGRAM) as probe:
                probe.connect(addr)
                if v6:
                    return probe.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU) - 48
                return probe.getsockopt(socket.IPPROTO_IP, IP_MTU) - 28
        except OSError:
            return None

    def _probe_gso(self) -> bool:
        try:
            self.sock.getsockopt(SOL_UDP, UDP_SEGMENT)
            return True
        except OSError:
            return False

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send_batch(self, datagrams: list[bytes], addr: tuple[Any, ...]) -> int:
        """Send datagrams in order; return how many left (fewer if the send buffer is full)."""
        sent = 0
        n = len(datagrams)
        sock = self.sock
        while sent < n:
            first = datagrams[sent]
            size = len(first)
            run = 1
            if self.gso:
                limit = min(MAX_GSO_SEGMENTS, MAX_GSO_BYTES // max(size, 1))
                while sent + run < n and run < limit and len(datagrams[sent + run]) == size:
                    run += 1
                if sent + run < n and run < limit and len(datagrams[sent + run]) < size:
                    run += 1  # a shorter datagram may end a GSO run
            try:
                if run == 1:
                    sock.sendto(first, addr)
                else:
                    sock.sendmsg(datagrams[sent : sent + run], [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0, addr)
            except (BlockingIOError, InterruptedError):
                return sent
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise TooLarge(size) from None
                if exc.errno == 5 and run > 1:  # EIO: GSO refused on this path; fall back for good
                    self.gso = False
                    continue
                raise
            sent += run
        return sent

    def recv_batch(self, max_messages: int = RECV_MESSAGES) -> list[tuple[Buffer, tuple[Any, ...]]]:
        """Datagrams waiting in the socket (up to ``max_messages`` messages, each GRO buffer's datagrams
        apart), with their source: one recvmmsg when the extension is built, else a recvmsg each; the datagrams
        of one GRO buffer are views into it on the pure-Python path (a copy each cost as much as their
        decryption's Python)."""
        fast = self.fastpath
        if fast is not None:
            if len(self._recv_buffer) < max_messages * RECV_BUFFER:
                self._recv_buffer = bytearray(max_messages * RECV_BUFFER)
            got: list[tuple[Buffer, tuple[Any, ...]]] = fast.recv_batch(
                self.sock.fileno(), self._recv_buffer, max_messages
            )
            return got
        out: list[tuple[Buffer, tuple[Any, ...]]] = []
        sock = self.sock
        for _ in range(max_messages):
            try:
                data, anc, _flags, addr = sock.recvmsg(RECV_BUFFER, self._anc)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue  # ICMP from an earlier send; not this datagram's fault
            seg = 0
            for level, kind, value in anc:
                if level == SOL_UDP and kind == UDP_GRO:
                    seg = _INT.unpack_from(value.ljust(_INT.size, b"\0"))[0]
            if seg and len(data) > seg:
                view = memoryview(data)
                out.extend((view[pos : pos + seg], addr) for pos in range(0, len(data), seg))
            else:
                out.append((data, addr))
        return out
