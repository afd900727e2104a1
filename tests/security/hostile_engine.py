"""A hostile server engine: our real one, with its offers to the client rewritten on the way out.

fasp-server runs it as ``--engine-command "python hostile_engine.py REWRITES"`` and appends the server-mode
arguments. The real engine (``python -m fasp`` with those arguments) reads the client's messages straight from
stdin; every control frame it writes is decoded here and each offer whose ``rel`` names a key of REWRITES (JSON:
``{"rel": {field: value, ...}}``) leaves with those fields replaced, as a server that lies would send it; a
``"_before"`` among them is a list of messages (their JSON objects) sent ahead of that offer. The data channel is
the real engine's: the files the client asks for arrive byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from fasp.session import control, messages
from fasp.session.messages import Offer


def main() -> int:
    rewrites: dict[str, dict] = json.loads(sys.argv[1])
    engine = subprocess.Popen([sys.executable, "-m", "fasp", *sys.argv[2:]], stdout=subprocess.PIPE)
    assert engine.stdout is not None
    decoder = control.Decoder()
    while data := os.read(engine.stdout.fileno(), 1 << 16):
        out = b""
        for msg in decoder.feed(data):
            if isinstance(msg, Offer) and msg.rel in rewrites:
                fields = dict(rewrites[msg.rel])
                for before in fields.pop("_before", []):
                    out += control.frame(messages.decode(json.dumps(before).encode()))
                msg = dataclasses.replace(msg, **fields)
            out += control.frame(msg)
        os.write(1, out)
    return engine.wait()


if __name__ == "__main__":
    sys.exit(main())
