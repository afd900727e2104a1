"""What the transfer program told us: statistics, listener events and the final result.

Sans-IO: :class:`Progress` folds management frames (and the library's own
verdicts, e.g. "the program died") into session and per-file statistics; the
session driver only feeds it frames and hands out what it returns.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from .constants import ExtraEventType, FileState, SessionState, TransferEventType
from .mgmt import Frame

EventType = TransferEventType | ExtraEventType
_EVENT_TYPES: dict[str, EventType] = {t.value: t for kind in (TransferEventType, ExtraEventType) for t in kind}
_FILE_EVENTS = {"START", "STOP", "SKIP", "FILEERROR"}
_CONFIGURED = {"INIT", "SESSION"}
"""Their ``Rate`` is the configured target (-l), kept as ``target_rate`` as STATS names it: ``rate`` is only ever
measured (a STATS frame's current rate, the session's average once it ends)."""
_ENDS = {"DONE", "ERROR"}
_TEXT_FIELDS = {
    "File",
    "Source",
    "Destination",
    "Description",
    "Host",
    "User",
    "SessionId",
    "Cookie",
    "RemoteAddress",
    "Direction",
    "Policy",
    "Cipher",
    "Transport",
    "FileChecksum",
    "FileChecksumType",
    "Tags",
    "UserStr",
}
"""Fields kept as text even when they look like numbers (a file may be named "42")."""
_SECRET_FIELDS = {"Password", "Pass", "Token", "Passphrase", "FilePass", "FilePassphrase", "Secret"}
"""Never copied into stats or events, whatever a program sends."""
_INT = re.compile(r"-?\d+\Z")
_FLOAT = re.compile(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?\Z")


def snake_case(name: str) -> str:
    """CamelCase field name to a stats key: ``TransferBytes`` -> ``transfer_bytes``, ``PMTU`` -> ``pmtu``."""
    name = re.sub(r"[^0-9A-Za-z]+", "_", name)
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return name.strip("_").lower()


def typed(name: str, text: str) -> str | int | float | bool:
    """A field's value as int, float or bool where it is one (Yes/No are booleans)."""
    if name in _TEXT_FIELDS:
        return text
    stripped = text.strip()
    if stripped in ("Yes", "No"):
        return stripped == "Yes"
    if _INT.match(stripped):
        return int(stripped)
    if _FLOAT.match(stripped):
        return float(stripped)
    return text


def _fields(frame: Frame) -> dict[str, Any]:
    return {snake_case(k): typed(k, v) for k, v in frame.fields.items() if k not in _SECRET_FIELDS}


def _average_rate(fields: dict[str, Any]) -> dict[str, int]:
    """``rate``: the session's average in kbit/s, from an ending frame's bytes and time (when it has both)."""
    moved, usec = fields.get("transfer_bytes"), fields.get("elapsedusec")
    if isinstance(moved, int) and isinstance(usec, int) and usec > 0:
        return {"rate": moved * 8 * 1000 // usec}
    return {}


class TransferEvent:
    """Describes the progress of a transfer: the event type and snapshots of the stats it changed."""

    def __init__(
        self, event_type: EventType, session_stats: dict[str, Any], file_stats: dict[str, Any] | None = None
    ) -> None:
        self.event_type = event_type
        self.session_stats = session_stats
        self.file_stats = file_stats

    def __repr__(self) -> str:
        name = None if self.file_stats is None else self.file_stats.get("file")
        return f"TransferEvent({self.event_type!s}, file={name!r})"


class SessionResult:
    """The result of a transfer session, as returned by ``Session.finish``."""

    def __init__(self, end_state: SessionState, stats: dict[str, Any], failed_files: Iterable[str]) -> None:
        self._end_state = end_state
        self._stats = stats
        self._failed_files = list(failed_files)

    def ok(self) -> bool:
        return self._end_state == SessionState.FINISHED

    def failed(self) -> bool:
        return self._end_state == SessionState.FAILED

    def failed_files(self) -> list[str]:
        return list(self._failed_files)

    def reason(self) -> str | None:
        """The error description when the session failed, else None."""
        if not self.failed():
            return None
        code = self._stats.get("code")
        return self._stats.get("description") or (f"error code {code}" if code is not None else "failed")

    def stats(self) -> dict[str, Any]:
        return self._stats

    def __repr__(self) -> str:
        return f"SessionResult({self._end_state!s}, reason={self.reason()!r})"


class Progress:
    """Session and per-file statistics, built from management frames."""

    def __init__(self) -> None:
        self.session: dict[str, Any] = {"state": SessionState.NOTSTARTED}
        self.files: dict[str, dict[str, Any]] = {}
        self._offsets: dict[str, int] = {}
        """Per file in flight: its start byte less the session's transfer bytes at its START, so a STATS frame's
        session-wide TransferBytes gives the file's bytes so far (the frame names the file, not its bytes)."""

    @property
    def concluded(self) -> bool:
        return self.session["state"] in (SessionState.FINISHED, SessionState.FAILED)

    def started(self) -> None:
        self.session["state"] = SessionState.RUNNING

    def apply(self, frame: Frame) -> TransferEvent | None:
        """Fold one event in; the listener event for it, or None for types this library does not know."""
        event_type = _EVENT_TYPES.get(frame.type)
        if event_type is None:
            return None
        if self.concluded:  # nothing after DONE/ERROR (or our own verdict) may change the result
            return None
        fields = _fields(frame)
        file_stats = None
        if frame.type in _FILE_EVENTS:
            file_stats = self._file(frame.type, fields)
        else:
            if frame.type in _CONFIGURED and "rate" in fields:
                fields["target_rate"] = fields.pop("rate")
            elif frame.type in _ENDS:
                fields.update(_average_rate(fields))
            self.session.update(fields)
            if frame.type == "DONE":
                self.session["state"] = SessionState.FINISHED
            elif frame.type == "ERROR":
                self._failed()
            elif frame.type == "STATS" and str(fields.get("file", "")) in self.files:
                file_stats = self._in_flight(str(fields["file"]), fields.get("transfer_bytes"))
        return TransferEvent(event_type, self.snapshot(), file_stats)

    def _file(self, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        name = str(fields.get("file", ""))
        stats = self.files.setdefault(
            name,
            {
                "file": name,
                "state": FileState.TRANSFERRING,
                "size": None,
                "bytes_written": 0,
                "checksum": None,
                "checksum_type": None,
                "error": None,
            },
        )
        stats.update(fields)
        self._offsets.pop(name, None)
        if event == "START":
            stats["state"] = FileState.TRANSFERRING
            stats["bytes_written"] = fields.get("start_byte") or 0
            moved = self.session.get("transfer_bytes")
            self._offsets[name] = stats["bytes_written"] - (moved if isinstance(moved, int) else 0)
        elif event == "STOP":
            stats["state"] = FileState.FINISHED
            stats["bytes_written"] = fields.get("written", fields.get("size", stats["bytes_written"]))
            stats["checksum"] = fields.get("file_checksum")
            stats["checksum_type"] = fields.get("file_checksum_type")
        elif event == "SKIP":
            stats["state"] = FileState.SKIPPED
        else:
            stats["state"] = FileState.FAILED
            stats["error"] = fields.get("code")
        return dict(stats)

    def _in_flight(self, name: str, transfer_bytes: object) -> dict[str, Any]:
        """The file a STATS frame names, its bytes_written moved on by the session's bytes since its START
        (capped at its size, never backwards)."""
        stats = self.files[name]
        offset = self._offsets.get(name)
        if offset is not None and isinstance(transfer_bytes, int):
            written = offset + transfer_bytes
            if isinstance(stats.get("size"), int):
                written = min(written, stats["size"])
            stats["bytes_written"] = max(stats["bytes_written"], written)
        return dict(stats)

    def fail(self, description: str, **details: object) -> TransferEvent | None:
        """The library's own verdict (program died, protocol broken, session closed); first verdict wins. Its
        ERROR event (a listener hears how the session ended, as from the program's ERROR), or None when an
        earlier verdict stands."""
        if self.concluded:
            return None
        self.session.update(details, description=description)
        self._failed()
        return TransferEvent(TransferEventType.ERROR, self.snapshot())

    def _failed(self) -> None:
        """The session failed: a file still in flight never completed, so it failed with it (and is one for
        failed_files() to name for a retry)."""
        self.session["state"] = SessionState.FAILED
        for stats in self.files.values():
            if stats["state"] == FileState.TRANSFERRING:
                stats.update(
                    state=FileState.FAILED,
                    error=self.session.get("code"),
                    description=self.session.get("description"),
                )

    def failed_files(self) -> list[str]:
        return [name for name, stats in self.files.items() if stats["state"] == FileState.FAILED]

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.session)

    def result(self) -> SessionResult:
        return SessionResult(self.session["state"], self.snapshot(), self.failed_files())
