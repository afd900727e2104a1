"""A minimal management listener for the control scenario.

The engine connects back to ``127.0.0.1:PORT`` of the namespace it runs
in, so this listener runs there too (``python -m bench.steer`` under
``ip netns exec``).  It logs every event frame with the monotonic time it
arrived (JSON lines) and sends scheduled RATE commands, timed from the
first STATS frame, so the runner can measure how fast a rate change takes
effect.  The wire format is faspmanager's own codec.
"""

from __future__ import annotations

import argparse
import json
import socket
import time

from faspmanager.mgmt import Decoder, encode


def steer(port: int, log_path: str, schedule: list[tuple[float, int]]) -> None:
    server = socket.create_server(("127.0.0.1", port))
    print("READY", flush=True)
    conn, _ = server.accept()
    conn.settimeout(0.02)
    decoder = Decoder()
    pending = sorted(schedule)
    first_stats = None
    with open(log_path, "w", buffering=1) as log:
        while True:
            now = time.monotonic()
            if first_stats is not None and pending and now - first_stats >= pending[0][0]:
                _, rate = pending.pop(0)
                conn.sendall(encode("RATE", {"Rate": rate}))
                log.write(json.dumps({"t": time.monotonic(), "sent": "RATE", "Rate": rate}) + "\n")
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            now = time.monotonic()
            for frame in decoder.feed(data):
                if frame.type == "STATS" and first_stats is None:
                    first_stats = now
                log.write(json.dumps({"t": now, "type": frame.type, **frame.fields}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.steer", description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("log")
    parser.add_argument(
        "--rate-at",
        action="append",
        default=[],
        metavar="SECONDS:KBPS",
        help="send RATE KBPS this long after the first STATS (repeatable)",
    )
    args = parser.parse_args()
    schedule = [(float(at), int(kbps)) for at, kbps in (item.split(":") for item in args.rate_at)]
    steer(args.port, args.log, schedule)


if __name__ == "__main__":
    main()
