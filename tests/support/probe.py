"""Run one transfer where the caller cannot listen (another network namespace) and report it as JSON.

``python -m tests.support.probe engine ARGS...`` runs the engine with ``-M`` on
a management listener of its own; ``python -m tests.support.probe manager
SPEC.json`` runs a faspmanager session (an upload described by the JSON). Either
prints one JSON object on stdout: the exit status or result, the events (type
and fields), and the engine's stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.engine.helpers import MgmtListener
from tests.support.programs import ENGINE


def engine(args: list[str]) -> dict:
    listener = MgmtListener()
    try:
        proc = subprocess.run([*ENGINE, "-M", str(listener.port), *args], capture_output=True, timeout=90)
        listener.closed.wait(5)
        return {
            "rc": proc.returncode,
            "stderr": proc.stderr.decode(errors="replace")[-3000:],
            "events": [[f.type, dict(f.fields)] for _, f in listener.events],
        }
    finally:
        listener.close()


def manager(spec: dict) -> dict:
    import faspmanager as fm

    events = []
    options = fm.TransferOptions(
        tcp_port=spec["port"],
        destination_root=spec["dest"],
        http_fallback_options=fm.HttpFallbackOptions(**spec["fallback"]),
    )
    order = fm.FileUpload(spec["sources"], spec["user"], spec["host"], dest_pass=spec["password"], options=options)
    with fm.session(order, ascp_path=spec["ascp"], listener=events.append) as session:
        session.start()
        result = session.finish()
    return {
        "ok": result.ok(),
        "reason": result.reason(),
        "events": [[str(e.event_type), {k: str(v) for k, v in e.session_stats.items()}] for e in events],
    }


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    out = engine(rest) if mode == "engine" else manager(json.loads(open(rest[0]).read()))
    print(json.dumps(out))
