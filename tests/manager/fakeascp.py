"""A TEST STAND-IN for an ascp-compatible program (not the engine): it speaks FASPMGR 2 on ``-M`` and
"transfers" by copying files on this machine, so session tests run against a real child process.

The remote host is taken to be this machine: files land under the destination argument (the last
positional). Behaviour is picked by ``FAKEASCP_MODE``:

  normal     INIT, SESSION, per file START / STATS / STOP (or SKIP for -E matches, FILEERROR for missing
             sources), then DONE (ERROR 27 if any file failed)
  slow       as normal, but 64 KiB per 20 ms, STATS after each chunk; RATE is echoed (TargetRate) in STATS
  die        INIT, SESSION, a line on stderr, then exit 3 without DONE/ERROR
  error      INIT, then ERROR 19 (authentication failed), exit 1
  garbage    connects and sends bytes that are no FASPMGR frame, then waits
  noconnect  never connects to the management port
  exit       a line on stderr and exit 2 at once
  hold       INIT, SESSION, then waits for commands (for tests that inspect the running child)

Before it exits, the stand-in waits (bounded) until the manager has read all it sent, as a real ascp is still
there while its SSH session and data take their time: a program that connects and exits at once cannot be told
from a stranger (faspmanager.admission), and under load the manager judged the stand-in too late now and then.

Commands obeyed at any time: RATE (echoed as TargetRate in a STATS), CANCEL (ERROR 28). With ``--keepalive``: START
copies one file (StartByte / EndByte honoured), PUT / WRITE / CLOSE write a stream file, DONE ends.
``FAKEASCP_RECORD=path`` records argv and the ASPERA_SCP_* environment as JSON (test-only);
``FAKEASCP_REMOTE_ROOT=dir`` puts the "remote" destination under dir (relative destinations stay apart
from the local files).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import queue
import socket
import sys
import threading
import time

from faspmanager.mgmt import Decoder, encode

VALUE_FLAGS = set("-M -i -c -f -Z -E -L -R -m -l -e -g -G -k -X -P -O -y -t -j -Y -I -x -C".split())


def parse(argv):
    opts, positional, i = {}, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            opts[name] = value or True
        elif arg in VALUE_FLAGS:
            opts.setdefault(arg, []).append(argv[i + 1])
            i += 1
        elif arg.startswith("-"):
            opts[arg] = True
        else:
            positional.append(arg)
        i += 1
    return opts, positional


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


class Fake:
    def __init__(self, argv):
        self.opts, positional = parse(argv)
        self.mode = os.environ.get("FAKEASCP_MODE", "normal")
        self.root = os.path.join(os.environ.get("FAKEASCP_REMOTE_ROOT", ""), positional[-1])
        sources = positional[:-1]
        dests = None
        if "--file-list" in self.opts:
            sources = read_lines(self.opts["--file-list"])
        if "--file-pair-list" in self.opts:
            lines = read_lines(self.opts["--file-pair-list"])
            sources, dests = lines[0::2], lines[1::2]
        self.jobs = [
            (s, os.path.join(self.root, d if dests else os.path.basename(s))) for s, d in zip(sources, dests or sources)
        ]
        self.rate = int(self.opts.get("-l", ["10000"])[-1])
        self.commands = queue.Queue()
        self.sock = None
        self.totals = dict(
            TransferBytes=0, FileBytes=0, TransfersAttempted=0, TransfersPassed=0, TransfersFailed=0, TransfersSkipped=0
        )
        self.started = time.monotonic()
        self.stream = None

    def send(self, frame_type, **fields):
        self.sock.sendall(encode(frame_type, fields))

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", int(self.opts["-M"][-1])))
        threading.Thread(target=self.read_commands, daemon=True).start()

    def linger(self, timeout=5.0):
        """Return once the manager has read everything sent (its end's receive queue in /proc/net/tcp is empty,
        or the row is gone: it closed), or after ``timeout`` s."""

        def proc(end):
            return f"{int.from_bytes(socket.inet_aton(end[0]), 'little'):08X}:{end[1]:04X}"

        try:
            theirs, mine = proc(self.sock.getpeername()), proc(self.sock.getsockname())
        except OSError:  # the manager reset the connection
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open("/proc/net/tcp") as table:
                rows = [row.split() for row in table.read().splitlines()[1:]]
            row = next((cols for cols in rows if cols[1] == theirs and cols[2] == mine), None)
            if row is None or int(row[4].split(":")[1], 16) == 0:
                return
            time.sleep(0.005)

    def read_commands(self):
        decoder = Decoder()
        while data := self.sock.recv(65536):
            for frame in decoder.feed(data):
                self.commands.put(frame)
        self.commands.put(None)

    def poll(self, block=False):
        """Obey RATE / CANCEL; return the next other command (or None)."""
        while True:
            try:
                frame = self.commands.get(block=block, timeout=30 if block else None)
            except queue.Empty:
                return None
            if frame is None:
                sys.exit(5)  # manager went away
            if frame.type == "RATE":
                self.rate = frame.int("Rate")
                self.send("STATS", Rate=self.rate, TargetRate=self.rate, TransferBytes=self.totals["TransferBytes"])
            elif frame.type == "CANCEL":
                self.send("ERROR", Code=28, Description="Cancelled by user")
                sys.exit(1)
            else:
                return frame

    def copy(self, source, dest, start=0, end=None):
        self.totals["TransfersAttempted"] += 1
        patterns = self.opts.get("-E", [])
        if any(fnmatch.fnmatch(os.path.basename(source), p) for p in patterns):
            self.totals["TransfersSkipped"] += 1
            self.send("SKIP", File=dest, Size=os.path.getsize(source), Description="excluded")
            return
        if not os.path.isfile(source):
            self.totals["TransfersFailed"] += 1
            self.send("FILEERROR", File=dest, Code=4, Description=f"No such file: {source}")
            return
        size = os.path.getsize(source)
        end = size if end is None else min(end, size)
        self.send("START", File=dest, Size=size, StartByte=start, FaspFileArgIndex=0)
        digest = hashlib.sha256()
        written = 0
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        with open(source, "rb") as src, open(dest, "wb") as out:
            src.seek(start)
            while written < end - start:
                chunk = src.read(min(65536, end - start - written))
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                self.totals["TransferBytes"] += len(chunk)
                if self.mode == "slow":
                    time.sleep(0.02)
                    self.send(
                        "STATS",
                        File=dest,
                        Bytescont=start + written,
                        Rate=self.rate,
                        TransferBytes=self.totals["TransferBytes"],
                        Loss=0.0,
                        Delay=1,
                    )
                    self.poll()
        self.send(
            "STATS",
            File=dest,
            Bytescont=start + written,
            TransferBytes=self.totals["TransferBytes"],
            Rate=self.rate,
            Loss=0.0,
            Delay=1,
            Elapsedusec=self.elapsed(),
        )
        self.finished_file(dest, size, written, digest.hexdigest())

    def finished_file(self, dest, size, written, sha256):
        self.totals["FileBytes"] += written
        self.totals["TransfersPassed"] += 1
        checksum = self.opts.get("--file-checksum")
        extra = {"FileChecksum": sha256, "FileChecksumType": "sha256"} if checksum == "sha256" else {}
        self.send("STOP", File=dest, Size=size, Written=written, FileBytes=written, Elapsedusec=self.elapsed(), **extra)

    def elapsed(self):
        return int((time.monotonic() - self.started) * 1e6)

    def serve(self):
        """--keepalive: obey START / PUT / WRITE / CLOSE until DONE."""
        while True:
            frame = self.poll(block=True)
            if frame is None or frame.type == "DONE":
                return
            if frame.type == "START":
                self.copy(
                    frame.get("Source"),
                    os.path.join(self.root, frame.get("Destination")),
                    frame.int("StartByte", 0),
                    frame.int("EndByte"),
                )
            elif frame.type == "PUT":
                path = os.path.join(self.root, frame.get("Destination"))
                self.stream = (path, open(path, "wb"), hashlib.sha256())
                self.totals["TransfersAttempted"] += 1
                self.send("START", File=path, Size=0, StartByte=0)
            elif frame.type == "WRITE":
                path, out, digest = self.stream
                out.write(frame.payload)
                digest.update(frame.payload)
                self.totals["TransferBytes"] += len(frame.payload)
                self.send("STATS", File=path, Bytescont=out.tell(), TransferBytes=self.totals["TransferBytes"])
            elif frame.type == "CLOSE":
                path, out, digest = self.stream
                out.close()
                size = os.path.getsize(path)
                self.finished_file(path, size, size, digest.hexdigest())
                self.stream = None

    def run(self):
        if self.mode == "exit":
            print("fakeascp: refusing to start (mode exit)", file=sys.stderr)
            return 2
        if self.mode == "noconnect":
            time.sleep(3600)
        self.connect()
        if self.mode == "garbage":
            self.sock.sendall(b"THIS IS NOT A MANAGEMENT FRAME\n")
            time.sleep(3600)
        self.send(
            "INIT",
            SessionId="fake-1",
            Direction="Send" if self.opts["--mode"] == "send" else "Receive",
            Host=self.opts["--host"],
            User=self.opts["--user"],
            Port=int(self.opts["-P"][-1]),
            Rate=self.rate,
            MinRate=int(self.opts.get("-m", ["0"])[-1]),
            Policy=self.opts.get("--policy"),
            Encryption="-T" not in self.opts,
            Keepalive="--keepalive" in self.opts,
            Cookie=os.environ.get("ASPERA_SCP_COOKIE"),
            Token=os.environ.get("ASPERA_SCP_TOKEN"),
        )
        if self.mode == "error":
            self.send("ERROR", Code=19, Description="Authentication failed")
            return 1
        self.send(
            "SESSION",
            SessionId="fake-1",
            Transport="fake",
            Host=self.opts["--host"],
            RemoteAddress="127.0.0.1",
            Port=int(self.opts["-O"][-1]),
            DatagramSize=1400,
            Rate=self.rate,
        )
        if self.mode == "die":
            print("fakeascp: simulated crash (mode die)", file=sys.stderr, flush=True)
            self.linger()
            os._exit(3)
        if self.mode == "hold":
            self.poll(block=True)
        for source, dest in self.jobs:
            self.copy(source, dest)
        if "--keepalive" in self.opts:
            self.serve()
        if self.totals["TransfersFailed"]:
            self.send("ERROR", Code=27, Description="Some files failed")
            return 1
        self.send("DONE", Elapsedusec=self.elapsed(), **self.totals)
        return 0


def main(argv):
    record = os.environ.get("FAKEASCP_RECORD")
    if record:
        with open(record, "w") as f:
            json.dump({"argv": argv, "env": {k: v for k, v in os.environ.items() if k.startswith("ASPERA_SCP_")}}, f)
    fake = Fake(argv)
    try:
        return fake.run()
    finally:
        if fake.sock is not None:
            fake.linger()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
