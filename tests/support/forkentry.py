"""A fork server (faspmanager.forkserver) whose forks report what they were given: the generic mechanism
tested apart from the engine. ``argv[1]``: ``report`` (print argv, cwd, one variable, then exit with
argv[2]), ``sleep`` (until signalled) or ``write FD TEXT`` (write TEXT to descriptor FD, then exit 0)."""

from __future__ import annotations

import json
import os
import sys
import time

from faspmanager.forkserver import main


def entry(argv: list[str]) -> int:
    if argv[0] == "sleep":
        print("sleeping", flush=True)
        time.sleep(60)
        return 0
    if argv[0] == "write":
        os.write(int(argv[1]), argv[2].encode())
        return 0
    print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "var": os.environ.get("FORKENTRY_VAR")}), flush=True)
    return int(argv[1])


if __name__ == "__main__":
    main(entry)
