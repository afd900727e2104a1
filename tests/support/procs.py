"""The process table as tests see it, read from /proc: live processes, a process's children and descendants.

Zombies count as gone everywhere here: a process that exited but was not reaped yet holds no resources a test
asks about (ports, files, a session).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.local import descendants as descendants  # re-exported: live processes below a pid, no zombies


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    argv: list[bytes]


def processes() -> list[Process]:
    """Every live process (those that vanish while being read are left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if fields[0] != "Z":
            found.append(Process(int(entry.name), int(fields[1]), argv))
    return found


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    return [p.pid for p in processes() if p.ppid == pid]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> list[bytes]:
    """``pid``'s argv ([] once it is gone; between fork and exec it is still the parent's)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:
        return []
