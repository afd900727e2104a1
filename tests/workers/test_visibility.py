"""A broker visibility timeout far shorter than a transfer: redelivered, yet run exactly once."""

from __future__ import annotations

import pytest

from tasks.client import submit
from tests.support.files import assert_same_file

from .support import make_file, types, upload

pytestmark = pytest.mark.timeout(120)


def test_transfer_longer_than_visibility_timeout_runs_once(worker_factory, server, tmp_path):
    short = {"FASPQ_VISIBILITY_TIMEOUT": "2", "FASPQ_RESTORE_INTERVAL": "1"}
    workers = [worker_factory("vis", concurrency=1, **short), worker_factory("vis", concurrency=1, **short)]
    src = tmp_path / "long.bin"
    make_file(src, 2_400_000)
    handle = submit(upload(server, [src], "vis", target_rate_kbps=3000))  # ~7 s, > 2 s visibility
    result = handle.wait(timeout=90)
    assert result["ok"] and result["attempts"] == 1, result
    kinds = types(handle.events(from_start=True))
    assert kinds.count("PICKED") == 1 and kinds.count("INIT") == 1
    assert_same_file(src, server.docroot / "vis" / src.name)
    logs = "".join(w.log() for w in workers)
    assert "is a duplicate" in logs or "already runs on" in logs  # the broker did redeliver it
