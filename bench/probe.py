"""Tiny network probes to check an emulated path does what it claims.

Run inside a namespace: ``python -m bench.probe echo PORT`` answers UDP
probes; ``python -m bench.probe rtt HOST PORT COUNT`` prints round-trip
times as JSON (the machine has no ``ping``); ``sink``/``send`` move a file
over one TCP connection so a test can check the bytes and the rate.
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
    else:
        raise SystemExit(f"unknown probe {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
