"""A stand-in for the server-mode engine: says how it was started (argv, cwd, pid, environment), then echoes stdin
to stdout.

Options before the server's own arguments change its behaviour:
--exit N (exit status after stdin EOF), --stderr TEXT, --ignore-term (survive SIGTERM),
--hold (after stdin EOF, stay until killed, like an engine stuck mid-transfer).
"""

import argparse
import json
import os
import signal
import sys

parser = argparse.ArgumentParser(allow_abbrev=False)
parser.add_argument("--exit", type=int, default=0)
parser.add_argument("--stderr", default="")
parser.add_argument("--ignore-term", action="store_true")
parser.add_argument("--hold", action="store_true")
opts, server_args = parser.parse_known_args()
if opts.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
report = {"argv": server_args, "cwd": os.getcwd(), "pid": os.getpid(), "env": dict(os.environ)}
os.write(1, json.dumps(report).encode() + b"\n")
if opts.stderr:
    os.write(2, opts.stderr.encode())
while chunk := os.read(0, 65536):
    view = memoryview(chunk)
    while view:
        view = view[os.write(1, view) :]
while opts.hold:
    signal.pause()
sys.exit(opts.exit)
