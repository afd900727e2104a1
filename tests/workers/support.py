"""Small helpers shared by the distributed tests: data files, orders for the test server."""

from __future__ import annotations

from pathlib import Path

import faspmanager as fm
from tasks.client import submit
from tests.support.files import random_file, sha256


def make_file(path: Path, size: int) -> str:
    """Random content of ``size`` bytes at ``path``; returns its sha256."""
    return sha256(random_file(path, size))


def options(server, **kwargs) -> fm.TransferOptions:
    """Options for the test server, its host key pinned when known (the worker's engines trust nothing else)."""
    kwargs.setdefault("create_dirs", True)
    if hasattr(server, "host_key_fingerprint"):
        kwargs.setdefault("check_ssh_fingerprint", server.host_key_fingerprint())
    return fm.TransferOptions(tcp_port=server.port, **kwargs)


def first(handle, kind: str, timeout: float = 60) -> dict:
    """The transfer's first ``kind`` event, which must come before its RESULT."""
    for event in handle.events(timeout=timeout):
        if event["type"] == kind:
            return event
        assert event["type"] != "RESULT", event
    raise AssertionError(f"no {kind} event within {timeout} s")


def running_upload(server, tmp_path: Path, name: str):
    """A 3 MB upload into ``name`` at 4 Mbit/s (about 6 s), once its first STATS says the engine runs: the
    transfer, and the file it sends (``name``.bin under ``tmp_path``)."""
    src = tmp_path / f"{name}.bin"
    make_file(src, 3_000_000)
    handle = submit(upload(server, [src], name, target_rate_kbps=4000))
    first(handle, "STATS", timeout=30)
    return handle, src


def upload(server, sources, root: str, password: str | None = None, **opts) -> fm.FileUpload:
    """Files into the directory ``root`` of the server's docroot (made here: ascp names a lone file
    sent to a path that is not a directory after that path)."""
    if getattr(server, "docroot", None) is not None:
        (server.docroot / root).mkdir(parents=True, exist_ok=True)
    return fm.FileUpload(
        source_paths=[str(s) for s in sources],
        dest_user=server.user,
        dest_host=server.host,
        dest_pass=password or server.password,
        options=options(server, destination_root=root, **opts),
    )


def download(server, sources, local_dir: Path, **opts) -> fm.FileDownload:
    local_dir.mkdir(parents=True, exist_ok=True)
    return fm.FileDownload(
        source_paths=list(sources),
        source_user=server.user,
        source_host=server.host,
        source_pass=server.password,
        options=options(server, destination_root=str(local_dir), **opts),
    )


def types(events) -> list[str]:
    return [e["type"] for e in events]
