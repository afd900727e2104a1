"""Live view of a transfer's events: a rich progress bar per file and one for the total.

Fed event dicts (as ``TransferHandle.events()`` yields them); knows nothing of
Redis, so it shows any event source, a replay included.
"""
from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)

TOTAL = "total"


class TransferView:
    def __init__(self, console: Console | None = None, title: str = ""):
        self.console = console or Console(stderr=True)
        self.progress = Progress(TextColumn("[bold]{task.description}", justify="left"), BarColumn(),
                                 DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=False)
        self._files: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._announced = 0
        self._total = self.progress.add_task(title or TOTAL, total=None)
        self.result: dict | None = None

    def __enter__(self) -> "TransferView":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def show(self, event: dict) -> None:
        kind = event.get("type")
        stats = event.get("file") or {}
        name = stats.get("file")
        if kind == "STATUS" and event.get("state") in ("SUCCEEDED", "FAILED"):
            self.result = event.get("result")
        elif kind == "START" and name:
            self._file(name, stats.get("size"), stats.get("bytes_written") or 0)
        elif kind == "STATS" and name:
            self._file(name, stats.get("size"), stats.get("bytes_written") or 0)
        elif kind == "STOP" and name:
            size = stats.get("size") or stats.get("bytes_written") or 0
            self._file(name, size, size)
        elif kind == "NOTIFICATION":
            pre = (event.get("session") or {}).get("pre_transfer_bytes")
            if pre:
                self._announced = pre
                self.progress.update(self._total, total=pre)
        elif kind in ("RETRY", "TAKEOVER", "PICKED", "CONTROL_REJECTED", "CONTROL_FAILED"):
            self.console.print(f"[yellow]{kind}[/]: " + ", ".join(
                f"{k}={v}" for k, v in event.items() if k in ("attempt", "worker", "code", "reason", "delay_s",
                                                             "previous_owner", "by", "op")))
        elif kind == "RESULT":
            self.result = {k: v for k, v in event.items() if k not in ("type", "transfer_id", "time")}

    def _file(self, name: str, size, written: int) -> None:
        if name not in self._files:
            self._files[name] = self.progress.add_task(os.path.basename(name) or name, total=size)
        if size:
            self._sizes[name] = size
        self._done[name] = written
        self.progress.update(self._files[name], total=size or None, completed=written)
        total = max(self._announced, sum(self._sizes.values())) or None
        self.progress.update(self._total, total=total, completed=sum(self._done.values()))
