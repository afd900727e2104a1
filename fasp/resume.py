"""What to do with a file the receiver may already (partly) have: skip it, resume it, or start over.

:func:`plan` is pure (stats in, decision out) so every overwrite/resume rule is
testable without a transfer. The *watermark* sidecar makes resume exact: the
receiver writes pieces out of order, so a killed transfer leaves holes; the
sidecar records the offset below which every byte is known to be written.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Existing:
    """What the receiver found on disk for one incoming file."""

    size: int
    mtime: float


@dataclass(frozen=True)
class Plan:
    action: str          # "send": receive from ``start``; "skip"; "verify": ask the sender to check [0, start)
    start: int = 0
    reason: str = ""


def plan(*, size: int, mtime: float, overwrite: str, resume: int,
         final: Existing | None, partial: Existing | None, watermark: int | None) -> Plan:
    """Decide for a source of ``size``/``mtime``. ``partial`` is the file we would resume into
    (the suffixed file, or ``final`` itself when there is no suffix); ``watermark`` the sidecar's
    verified length, None when there is no (valid) sidecar."""
    if final is not None:
        resumable = partial is final and resume > 0 and 0 < final.size < size
        if resumable and watermark is None:
            # no sidecar: nothing says this shorter file is an unfinished transfer of ours, so it is a
            # destination file like any other, and "never" / "older" protect it from being resumed into
            refused = _refused(mtime, overwrite, final)
            if refused is not None:
                return refused
        if not resumable:
            verdict = _against_final(size, mtime, overwrite, resume, final)
            if verdict is not None:
                return verdict
            if partial is final:
                return Plan("send", 0)
    if resume == 0 or partial is None:
        return Plan("send", 0)
    have = partial.size if watermark is None else min(partial.size, watermark)
    if have <= 0 or have >= size:
        return Plan("send", 0)
    if resume == 1:
        return Plan("send", have, "resumed")
    return Plan("verify", have)


def _refused(mtime: float, overwrite: str, final: Existing) -> Plan | None:
    """The skip that "never" and "older" / "diff+older" impose on an existing destination file, if any."""
    if overwrite == "never":
        return Plan("skip", reason="destination exists (--overwrite=never)")
    if overwrite in ("older", "diff+older") and int(final.mtime) >= int(mtime):
        return Plan("skip", reason="destination is not older than the source")
    return None


def _against_final(size: int, mtime: float, overwrite: str, resume: int, final: Existing) -> Plan | None:
    """The overwrite policy against a complete-looking destination file; None means transfer it."""
    refused = _refused(mtime, overwrite, final)
    if refused is not None:
        return refused
    if overwrite in ("diff", "diff+older") and final.size == size and resume > 0:
        if resume == 1:
            return Plan("skip", reason="destination has the same size")
        return Plan("verify", size)
    return None


def after_verify(verdict: Plan, size: int, ok: bool) -> Plan:
    """The decision once the sender compared its own prefix digest."""
    if not ok:
        return Plan("send", 0)
    if verdict.start >= size:
        return Plan("skip", reason="destination is identical")
    return Plan("send", verdict.start, "resumed")


def sidecar_path(partial: str) -> str:
    head, tail = os.path.split(partial)
    return os.path.join(head, f".{tail}.fasp-resume")


def read_watermark(partial: str, size: int, mtime: float) -> int | None:
    """The sidecar's watermark if it describes this same source, 0 if it describes another, None if absent."""
    try:
        with open(sidecar_path(partial), encoding="utf-8") as handle:
            record = json.load(handle)
        if record.get("size") == size and int(record.get("mtime", -1)) == int(mtime):
            return int(record["have"])
        return 0
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def write_watermark(partial: str, size: int, mtime: float, have: int) -> None:
    path = sidecar_path(partial)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"size": size, "mtime": int(mtime), "have": have}, handle)
    os.replace(tmp, path)


def clear_watermark(partial: str) -> None:
    try:
        os.unlink(sidecar_path(partial))
    except FileNotFoundError:
        pass
