"""The split of the queue packages holds: an application that submits imports nothing of the worker runtime and
builds no worker app, and the local launcher finds its programs as an installed package does (no repository path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tasks
from tasks.store.keys import Keys

from .support import make_file

pytestmark = pytest.mark.timeout(120)

REPO = str(Path(tasks.__file__).resolve().parents[1])

_SUBMIT = """
import importlib, json, pkgutil, sys
import celery._state
import faspmanager as fm
import tasks

order = fm.FileUpload(source_paths=[sys.argv[1]], dest_user="u", dest_host="127.0.0.1", dest_pass="not-used-pw")
handle = tasks.submit(order, transfer_id="split-1", queue="split-queue")  # no worker consumes split-queue
for module in pkgutil.walk_packages(tasks.__path__, "tasks."):  # the rest of tasks/ (CLI, demo...) too
    importlib.import_module(module.name)
apps = list(celery._state._apps)
print(json.dumps({
    "id": handle.id,
    "runtime": sorted(m for m in sys.modules if m == "workers" or m.startswith("workers.")),
    "includes": [list(app.conf.include or ()) for app in apps],
    "order_tasks": sorted(name for app in apps for name in app.tasks if name.startswith("faspq.")),
    "worker_signals": [name for name in ("worker_init", "worker_ready", "worker_shutdown")
                       if getattr(celery.signals, name).receivers],
}))
"""


def test_submit_in_a_fresh_interpreter_loads_no_worker_runtime(faspq, tmp_path):
    """``import tasks``, ``tasks.submit()`` against the real Redis (no worker), then every module of tasks/."""
    source = tmp_path / "a.bin"
    make_file(source, 1000)
    proc = subprocess.run(
        [sys.executable, "-c", _SUBMIT, str(source)],
        env=dict(os.environ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["runtime"] == [], seen
    assert seen["includes"] in ([], [[]]) and seen["order_tasks"] == [] and seen["worker_signals"] == [], seen
    client = faspq.client()  # and the transfer really is queued: status, signed order, one task message
    status = client.hgetall(Keys("t", "split-1").status)
    assert status[b"state"] == b"QUEUED", status
    assert client.hget(Keys("t", "split-1").order, "task") == b"faspq.file_upload"
    message = json.loads(client.lindex("split-queue", 0))
    assert message["headers"]["task"] == "faspq.file_upload" and message["headers"]["id"] == "split-1"


def test_the_launcher_adds_no_repository_path(worker_factory, server):
    """The worker and the server run from their own directories, with exactly the PYTHONPATH they were given:
    their programs (``python -m celery -A workers.app``, the fasp-server entry point) resolve as installed."""
    worker = worker_factory("split")
    for service in (worker, server):
        pid = service.process.pid
        assert not any(REPO in str(arg) for arg in service.process.args), service.process.args
        assert not os.readlink(f"/proc/{pid}/cwd").startswith(REPO)
        with open(f"/proc/{pid}/environ", "rb") as env:
            given = dict(item.split(b"=", 1) for item in env.read().split(b"\0") if b"=" in item)
        assert given.get(b"PYTHONPATH", b"").decode() == os.environ.get("PYTHONPATH", "")
