"""An ascli-style consumer follows a transfer of ours through the management port.

What aspera-cli reads (its agent's progress handling, and the field names and types of
lib/aspera/ascp/management.rb in IBM/aspera-cli): INIT opens the session; NOTIFICATION with PreTransferBytes gives
the total; STATS carry TransferBytes (and FileBytes, Size for the file at hand) as integers; STOP per file with Size;
DONE closes with TransferBytes; every frame parses with its line rule ``^([^:]+): (.*)$``.
"""

from __future__ import annotations

import re

from tests.compat.test_ascli_argv import Run

LINE = re.compile(r"^([^:]+): (.*)$")


def test_an_ascli_consumer_follows_an_upload_and_a_download(fasp_server_module, tmp_path):
    for direction in ("upload", "download"):
        run = Run(fasp_server_module, tmp_path / direction, f"events-{direction}")
        if direction == "download":
            run.download()
        run.ts["precalculate_job_size"] = True
        run.go()
        run.ok()
        run.arrived()
        for frame in run.events:  # ascli raises on any line its rule does not take
            for name, value in frame.fields.items():
                assert LINE.match(f"{name}: {value}") and "\n" not in value, (name, value)
        kinds = [e.type for e in run.events]
        assert kinds[0] == "INIT" and kinds[-1] == "DONE", kinds
        total = [
            int(e.fields["PreTransferBytes"])
            for e in run.events
            if e.type == "NOTIFICATION" and "PreTransferBytes" in e.fields
        ]
        assert total == [30_000], (direction, kinds)
        seen = [int(e.fields["TransferBytes"]) for e in run.events if e.type == "STATS"]
        assert seen == sorted(seen) and all(0 <= b <= 30_000 for b in seen), seen
        stop = run.event("STOP")
        assert int(stop.fields["Size"]) == 30_000 and stop.fields["File"].endswith("small.bin")
        assert int(run.event("DONE").fields["TransferBytes"]) == 30_000
