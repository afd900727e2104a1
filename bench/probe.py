"""Tiny network probes to check an emulated path does what it claims.

Run inside a namespace: ``python -m bench.probe echo PORT`` answers UDP
probes; ``python -m bench.probe rtt HOST PORT COUNT`` prints round-trip
times as JSON (the machine has no ``ping``); ``sink``/``send`` move a file
over one TCP connection so a test can check the bytes and the rate;
``count``/``blast`` move numbered UDP datagrams the way the engine does (UDP
GSO out, UDP GRO in) so a test or benchmark sees what the path delivered;
``pairs``/``spread`` send datagrams two at a time, back to back, and time their
arrival with the kernel's receive timestamps: the bottleneck spreads a pair to
one packet's serialization time, so the gap tells the link's rate, whoever else
keeps its queue full.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time


def echo(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    print("READY", flush=True)
    while True:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)


def rtt(host: str, port: int, count: int, interval_s: float = 0.02, wait_s: float = 2.0) -> dict:
    """Send ``count`` numbered probes; report each answered one's RTT (ms)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    sock.settimeout(0.001)
    sent: dict[int, float] = {}
    rtts: list[float] = []
    deadline = None
    seq, last = 0, 0.0
    while True:
        now = time.monotonic()
        if seq < count and now - last >= interval_s:
            last = now
            sent[seq] = now
            sock.send(struct.pack("!I", seq) + bytes(60))
            seq += 1
            if seq == count:
                deadline = now + wait_s
        try:
            data = sock.recv(2048)
            rtts.append((time.monotonic() - sent[struct.unpack_from("!I", data)[0]]) * 1000)
        except (TimeoutError, BlockingIOError):
            pass
        if deadline is not None and (len(rtts) == count or time.monotonic() > deadline):
            return {"sent": count, "received": len(rtts), "rtt_ms": rtts}


def sink(port: int, path: str) -> None:
    """Accept one TCP connection and write everything it sends to ``path``."""
    server = socket.create_server(("0.0.0.0", port))
    print("READY", flush=True)
    conn, _ = server.accept()
    with open(path, "wb") as out:
        while chunk := conn.recv(1 << 16):
            out.write(chunk)


def send(host: str, port: int, path: str) -> dict:
    with open(path, "rb") as src, socket.create_connection((host, port)) as conn:
        start = time.monotonic()
        size = conn.sendfile(src)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # returns when the sink has closed, i.e. has everything
        return {"bytes": size, "seconds": time.monotonic() - start}


SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104
GSO_SEGMENTS = 44  # 44 x 1400 bytes: one 61,600-byte buffer, as the engine sends
_SEQ = struct.Struct("!I")


def blast(host: str, port: int, mbit: float, seconds: float, size: int = 1400) -> dict:
    """Numbered datagrams of ``size`` bytes at ``mbit`` Mbit/s, GSO buffers of 44."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    pad = bytes(range(256)) * (size // 256 + 1)
    pad = pad[: size - _SEQ.size]
    per_s = mbit * 1e6 / 8 / size
    seq, start = 0, time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        if seq >= (now - start) * per_s:
            time.sleep(0.0005)
            continue
        buffer = b"".join(_SEQ.pack(n) + pad for n in range(seq, seq + GSO_SEGMENTS))
        try:
            sock.sendmsg([buffer], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))])
        except BlockingIOError:
            continue
        seq += GSO_SEGMENTS
    return {"sent": seq, "size": size, "seconds": time.monotonic() - start}


def count(port: int, idle_s: float = 1.0, size: int = 1400) -> dict:
    """Receive numbered datagrams (UDP GRO on) until ``idle_s`` of silence after
    the first; report distinct intact ones, damaged ones, and the most datagrams
    one receive call returned."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    sock.bind(("0.0.0.0", port))
    pad = (bytes(range(256)) * (size // 256 + 1))[: size - _SEQ.size]
    seen: set[int] = set()
    damaged = most = 0
    first = last = None
    print("READY", flush=True)
    sock.settimeout(None)
    while True:
        try:
            data, anc, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(4))
        except TimeoutError:
            break
        last = time.monotonic()
        if first is None:
            first = last
            sock.settimeout(idle_s)
        seg = next((struct.unpack("=i", v[:4])[0] for lvl, kind, v in anc if (lvl, kind) == (SOL_UDP, UDP_GRO)), 0)
        parts = [data[i : i + seg] for i in range(0, len(data), seg)] if seg else [data]
        most = max(most, len(parts))
        for part in parts:
            if len(part) == size and part[_SEQ.size :] == pad:
                seen.add(_SEQ.unpack_from(part)[0])
            else:
                damaged += 1
    return {"received": len(seen), "damaged": damaged, "most_per_read": most, "seconds": (last or 0) - (first or 0)}


PAIR = struct.Struct("!IB")  # the pair's number, then 0 or 1: which of the two
SO_TIMESTAMPNS = 35  # (not in the socket module) a receive timestamp in each datagram's ancillary data


def pairs(host: str, port: int, seconds: float, gap_s: float, size: int = 1472) -> dict:
    """A pair of ``size``-byte datagrams, back to back, every ``gap_s``: light enough to change no one's share."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    pad = bytes(size - PAIR.size)
    n, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        sock.send(PAIR.pack(n, 0) + pad)
        sock.send(PAIR.pack(n, 1) + pad)
        n += 1
        time.sleep(gap_s)
    return {"pairs": n, "size": size}


def spread(port: int, seconds: float) -> dict:
    """Each pair's arrival gap (microseconds, by the kernel's receive timestamps), pairs whose two both arrived."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(0.2)
    first: dict[int, float] = {}
    gaps: list[float] = []
    print("READY", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data, anc, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(16))
        except TimeoutError:
            continue
        stamp = next((v for lvl, kind, v in anc if (lvl, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS)), None)
        if stamp is None or len(data) < PAIR.size:
            continue
        sec, nsec = struct.unpack("=qq", stamp[:16])
        n, which = PAIR.unpack_from(data)
        if which == 0:
            first[n] = sec + nsec * 1e-9
        elif n in first:
            gaps.append((sec + nsec * 1e-9 - first.pop(n)) * 1e6)
    return {"gaps_us": gaps}


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "echo":
        echo(int(args[0]))
    elif command == "rtt":
        print(json.dumps(rtt(args[0], int(args[1]), int(args[2]))))
    elif command == "sink":
        sink(int(args[0]), args[1])
    elif command == "send":
        print(json.dumps(send(args[0], int(args[1]), args[2])))
    elif command == "blast":
        print(json.dumps(blast(args[0], int(args[1]), float(args[2]), float(args[3]))))
    elif command == "count":
        print(json.dumps(count(int(args[0]))))
    elif command == "pairs":
        print(json.dumps(pairs(args[0], int(args[1]), float(args[2]), float(args[3]))))
    elif command == "spread":
        print(json.dumps(spread(int(args[0]), float(args[1]))))
    else:
        raise SystemExit(f"unknown probe {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
