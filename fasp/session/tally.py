"""The client's running account of a session, turned into management events.

The sending and receiving roles report what happens to each file; the tally
keeps the counts ascp reports (per session and per source argument) and emits
events as (type, fields) pairs. Whoever listens (the management port, the
progress line) only formats them.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

Emit = Callable[[str, dict], None]


@dataclass
class Counts:
    attempted: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0


class Tally:
    def __init__(self, emit: Emit, session_id: str, checksum_type: str = "none") -> None:
        self._emit = emit
        self.session_id = session_id
        self.checksum_type = checksum_type
        self.started_at = time.monotonic()
        self.transfer_bytes = 0  # bytes moved this session (what resume saved is not counted)
        self.file_bytes = 0  # bytes of files now complete at the destination
        self.total = Counts()
        self.per_arg: dict[int, Counts] = defaultdict(Counts)
        self.current_file = ""
        self.first_error: tuple[int, str] | None = None
        self.outcomes: list[tuple[str, str, str]] = []  # (passed|skipped|failed, file, detail), in order
        self._file_elapsed: dict[str, float] = {}

    def elapsed_usec(self) -> int:
        return int((time.monotonic() - self.started_at) * 1e6)

    def emit(self, event: str, fields: dict) -> None:
        self._emit(event, {"SessionId": self.session_id, **fields})

    def started(self, key: str, arg: int, size: int, start_byte: int) -> None:
        self.current_file = key
        self._file_elapsed[key] = time.monotonic()
        self.emit("START", {"File": key, "Size": size, "StartByte": start_byte, "FaspFileArgIndex": arg})

    def progress(self, nbytes: int) -> None:
        self.transfer_bytes += nbytes

    def stopped(self, key: str, arg: int, size: int, written: int, checksum: str | None) -> None:
        self.total.attempted += 1
        self.total.passed += 1
        self.per_arg[arg].attempted += 1
        self.per_arg[arg].passed += 1
        self.file_bytes += size
        self.outcomes.append(("passed", key, ""))
        began = self._file_elapsed.pop(key, time.monotonic())
        fields = {
            "File": key,
            "Size": size,
            "Written": written,
            "FileBytes": size,
            "Elapsedusec": int((time.monotonic() - began) * 1e6),
            "FaspFileArgIndex": arg,
        }
        if checksum:
            fields.update(FileChecksum=checksum, FileChecksumType=self.checksum_type)
        self.emit("STOP", fields)

    def skipped(self, key: str, arg: int, size: int, reason: str, source: str | None = None) -> None:
        self.total.skipped += 1
        self.per_arg[arg].skipped += 1
        self.outcomes.append(("skipped", key, reason))
        fields = {"File": key, "Size": size, "Description": reason, "FaspFileArgIndex": arg}
        self.emit("SKIP", _with_source(fields, source))

    def failed(self, key: str, arg: int, code: int, desc: str, source: str | None = None) -> None:
        self.total.attempted += 1
        self.total.failed += 1
        self.per_arg[arg].attempted += 1
        self.per_arg[arg].failed += 1
        self._file_elapsed.pop(key, None)
        self.outcomes.append(("failed", key, f"{code} {desc}"))
        if self.first_error is None:  # named in the session's error: "write failed" alone says not where
            named = os.path.basename(key.rstrip("/")) in desc  # most descriptions name it already
            self.first_error = (code, desc if named else f"{key}: {desc}")
        fields = {"File": key, "Code": code, "Description": desc, "FaspFileArgIndex": arg}
        self.emit("FILEERROR", _with_source(fields, source))

    def interrupted(self, code: int, desc: str) -> None:
        """The session ends early: the files still in flight count as failed with its error (for the manifest)."""
        self.outcomes.extend(("failed", key, f"{code} {desc}") for key in self._file_elapsed)
        self._file_elapsed.clear()

    def arg_done(self, arg: int) -> None:
        counts = self.per_arg[arg]
        self.emit(
            "ARGSTOP",
            {
                "FaspFileArgIndex": arg,
                "ArgTransfersAttempted": counts.attempted,
                "ArgTransfersPassed": counts.passed,
                "ArgTransfersFailed": counts.failed,
                "ArgTransfersSkipped": counts.skipped,
            },
        )

    def stats(
        self, *, rate_kbps: int, target_kbps: int, min_kbps: int, policy: str, loss: float, rtt_ms: float | None
    ) -> None:
        self.emit(
            "STATS",
            {
                "File": self.current_file,
                "Bytescont": self.transfer_bytes,
                "TransferBytes": self.transfer_bytes,
                "FileBytes": self.file_bytes,
                "Rate": int(rate_kbps),
                "TargetRate": int(target_kbps),
                "MinRate": int(min_kbps),
                "Policy": policy,
                "Loss": float(loss),
                "Delay": int(rtt_ms or 0),
                "Elapsedusec": self.elapsed_usec(),
                "TransfersAttempted": self.total.attempted,
                "TransfersPassed": self.total.passed,
            },
        )

    def done_fields(self) -> dict:
        return {
            "TransferBytes": self.transfer_bytes,
            "FileBytes": self.file_bytes,
            "Elapsedusec": self.elapsed_usec(),
            "TransfersAttempted": self.total.attempted,
            "TransfersPassed": self.total.passed,
            "TransfersFailed": self.total.failed,
            "TransfersSkipped": self.total.skipped,
        }

    def session_outcome(self) -> tuple[int, str] | None:
        """The (code, description) the session must end with, or None for DONE."""
        if not self.total.failed:
            return None
        code, desc = self.first_error or (27, "some files failed")
        if self.total.passed:
            return 27, f"{self.total.failed} of {self.total.attempted} files failed; first: {desc}"
        return code, desc


def _with_source(fields: dict, source: str | None) -> dict:
    """``File`` is always the client's own path for a file (an upload's source, a download's destination); a
    download source the peer could not even offer also says which remote path it was (``Source``)."""
    return fields if source is None else {**fields, "Source": source}
