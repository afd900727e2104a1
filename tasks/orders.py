"""The order types the queue carries: one row each, the only place their names are written.

The order schema (tasks/schema.py), the Celery task names, the control ops a
type takes (tasks/store/control.py), the worker's policy (config/policy.py) and
the worker's attempt (workers/runner.py) all read this table, so adding an
order type is one row. Imports nothing: config/ may read it too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OrderType:
    """``name`` is faspmanager's class (the order record's ``type``); ``fields`` its constructor arguments but
    ``options``, as faspmanager-api.txt documents them; ``task`` the Celery task that runs it."""

    name: str
    task: str
    fields: tuple[str, ...]
    upload: bool
    open_ended: bool = False
    """Runs until told no more files come (``finish``), rather than until its listed files are done."""
    stream: bool = False
    """Its bytes come from the client (through Redis), not from files: they cannot be replayed."""


_UPLOADER = ("dest_user", "dest_host", "dest_pass", "dest_identity")
_DOWNLOADER = ("source_user", "source_host", "source_pass", "source_identity")

ORDER_TYPES: dict[str, OrderType] = {
    row.name: row
    for row in (
        OrderType(
            "FileUpload",
            "faspq.file_upload",
            ("source_paths", "dest_user", "dest_host", "dest_paths", "dest_pass", "dest_identity"),
            upload=True,
        ),
        OrderType(
            "FileDownload",
            "faspq.file_download",
            ("source_paths", "source_user", "source_host", "dest_paths", "source_pass", "source_identity"),
            upload=False,
        ),
        OrderType("PersistentUpload", "faspq.persistent_upload", _UPLOADER, upload=True, open_ended=True),
        OrderType("PersistentDownload", "faspq.persistent_download", _DOWNLOADER, upload=False, open_ended=True),
        OrderType("StreamUpload", "faspq.stream_upload", _UPLOADER, upload=True, open_ended=True, stream=True),
    )
}
