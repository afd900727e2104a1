"""A hostile server engine: our real one, with its offers and piece requests rewritten on the way out.

fasp-server runs it as ``--engine-command "python hostile_engine.py REWRITES"`` and appends the server-mode
arguments. The real engine (``python -m fasp`` with those arguments) reads the client's messages straight from
stdin; every control frame it writes is decoded here, rewritten as REWRITES (JSON) says, as a server that lies
would send it:

- ``"offers": {"rel": {field: value, ...}}``: each offer whose ``rel`` names a key leaves with those fields
  replaced; a ``"_before"`` among them is a list of messages (their JSON objects) sent ahead of that offer;
- ``"pieces": {field: value, ..., "_copies": N}``: the first piece the engine asks for (an upload's) is followed
  by N more of the same file, with fresh piece ids and those fields replaced (a range asked for again and again).

The data channel is the real engine's: the files the client asks for arrive byte for byte, and the pieces the
real engine asked for land.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from fasp.session import control, messages
from fasp.session.messages import Offer, Piece

FRESH = 1 << 40
"""The first id of the pieces added: far above the real engine's own."""


def main() -> int:
    rewrites: dict[str, dict] = json.loads(sys.argv[1])
    offers, pieces = rewrites.get("offers", {}), rewrites.get("pieces")
    engine = subprocess.Popen([sys.executable, "-m", "fasp", *sys.argv[2:]], stdout=subprocess.PIPE)
    assert engine.stdout is not None
    decoder = control.Decoder()
    while data := os.read(engine.stdout.fileno(), 1 << 16):
        out = b""
        for msg in decoder.feed(data):
            added = []
            if isinstance(msg, Offer) and msg.rel in offers:
                fields = dict(offers[msg.rel])
                for before in fields.pop("_before", []):
                    out += control.frame(messages.decode(json.dumps(before).encode()))
                msg = dataclasses.replace(msg, **fields)
            elif isinstance(msg, Piece) and pieces is not None:
                fields, pieces = dict(pieces), None
                copies = fields.pop("_copies")
                added = [dataclasses.replace(msg, pid=FRESH + n, **fields) for n in range(copies)]
            out += b"".join(control.frame(m) for m in [msg, *added])
        os.write(1, out)
    return engine.wait()


if __name__ == "__main__":
    sys.exit(main())
