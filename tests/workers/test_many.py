"""Three workers, thirty concurrent transfers: all complete, each steered by its own owner."""

from __future__ import annotations

import pytest

from tasks.client import submit
from tests.support.files import assert_same_file

from .support import make_file, upload

N = 30


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_thirty_transfers_on_three_workers(worker_factory, server, tmp_path):
    for _ in range(3):
        worker_factory("many", concurrency=3)
    sources = [tmp_path / f"m{i:02d}.bin" for i in range(N)]
    for src in sources:
        make_file(src, 150_000)
    handles = [submit(upload(server, [src], f"many/{i}")) for i, src in enumerate(sources)]
    for i, handle in enumerate(handles):
        handle.set_rate(20_000 + i)  # distinct per transfer: shows who applied what

    owners = set()
    for i, (handle, src) in enumerate(zip(handles, sources)):
        result = handle.wait(timeout=200)
        assert result["ok"], (i, result)
        assert_same_file(src, server.docroot / "many" / str(i) / src.name)
        events = list(handle.events(from_start=True))
        picked = {e["attempt"]: e["worker"] for e in events if e["type"] == "PICKED"}
        applied = [e for e in events if e["type"] == "CONTROL" and e["op"] == "set_rate"]
        assert applied, f"set_rate of transfer {i} never applied"
        for event in applied:
            assert event["args"] == {"kbps": 20_000 + i}
            assert event["worker"] == picked[event["attempt"]]
        owners.update(picked.values())
    assert len({owner.split(":")[1] for owner in owners}) == 3  # every worker process took part
