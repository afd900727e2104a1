"""Live view of a transfer's events: a rich progress bar per file and one for the total.

Fed event dicts (as ``TransferHandle.events()`` yields them); knows nothing of
Redis, so it shows any event source, a replay included.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .store.events import progress_line, progress_meta, status_session
from .store.keys import TERMINAL_STATES

TOTAL = "total"


class TransferView:
    """On a terminal, live bars; piped, one plain line per second that never wraps (``done/total rate eta``)."""

    def __init__(
        self, console: Console | None = None, title: str = "", line_interval: float = 1.0, json_lines: bool = False
    ):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._files: dict[str, TaskID] = {}
        self._sizes: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._announced = 0
        self._moved: int | None = None
        self._title = title or TOTAL
        self._total = self.progress.add_task(self._title, total=None)
        self._line_interval = line_interval
        self._line_at = 0.0
        self.meta: dict[str, Any] = {}
        self.result: dict | None = None
        self.json_lines = json_lines  # each event as a JSON line on stdout (machine-readable watch)

    @property
    def live(self) -> bool:
        return self.console.is_terminal and not self.json_lines

    def __enter__(self) -> TransferView:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()
        else:
            self._line(force=True)

    def note(self, text: str) -> None:
        self.console.print(text, soft_wrap=True)

    def show(self, event: dict[str, Any]) -> None:
        if self.json_lines:
            print(json.dumps(event, default=str), flush=True)
        kind = event.get("type")
        stats = event.get("file") or {}
        session = (status_session(event) if kind == "STATUS" else event.get("session")) or {}
        name = stats.get("file")
        if session:
            self._session(session)
        if kind == "STATUS" and event.get("state") in TERMINAL_STATES:
            self.result = event.get("result")
        elif kind in ("START", "STATS") and (name or session.get("file")):
            # a sending engine reports no bytes per file until STOP (its session's FileBytes counts the files
            # completed, not the one in flight): the total follows the session's TransferBytes meanwhile
            name = name or session["file"]
            self._file(name, stats.get("size") or self._sizes.get(name), stats.get("bytes_written") or 0)
        elif kind == "STOP" and name:
            size = stats.get("size") or stats.get("bytes_written") or 0
            self._file(name, size, size)
        elif kind in ("RETRY", "TAKEOVER", "PICKED", "CONTROL_REJECTED", "CONTROL_FAILED", "NO_WORKER", "CONTROL"):
            self.note(
                f"[yellow]{kind}[/]: "
                + ", ".join(
                    f"{k}={v}"
                    for k, v in event.items()
                    if k
                    in ("attempt", "worker", "code", "reason", "delay_s", "previous_owner", "by", "op", "args", "queue")
                )
            )
        elif kind == "RESULT":
            self.result = {k: v for k, v in event.items() if k not in ("type", "transfer_id", "time")}
        self._update_total()

    def _session(self, session: dict[str, Any]) -> None:
        self.meta = progress_meta(session)
        if self.meta["total"]:
            self._announced = self.meta["total"]
        if "transfer_bytes" in session:
            self._moved = self.meta["bytes"]

    def _file(self, name: str, size: int | None, written: int) -> None:
        if name not in self._files:
            self._files[name] = self.progress.add_task(os.path.basename(name) or name, total=size)
        if size:
            self._sizes[name] = size
        self._done[name] = max(written, self._done.get(name, 0))
        self.progress.update(self._files[name], total=size or None, completed=self._done[name])

    def _update_total(self) -> None:
        total = self._announced or sum(self._sizes.values()) or None
        done = max(self._moved or 0, sum(self._done.values()))
        self.progress.update(self._total, total=total, completed=done)
        self._line()

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.live or self.json_lines or (not force and now - self._line_at < self._line_interval):
            return
        self._line_at = now
        task = self.progress.tasks[0]
        line = progress_line({**self.meta, "bytes": int(task.completed), "total": int(task.total or 0) or None})
        self.console.print(f"{self._title}: {line}", soft_wrap=True, markup=False, highlight=False)
