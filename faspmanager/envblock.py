"""Blank secrets in the environment block a process was started with.

``os.environ.pop`` (unsetenv) only takes a variable out of the environment list:
the kernel still shows the block as it placed it at exec in /proc/PID/environ,
which every process of the same user can read (an ``-e`` program walking up to
its engine and worker, say). After a process has read its secrets, it blanks
their bytes there.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

ARGUMENTS, ENVIRONMENT = 45, 47
"""Where /proc/self/stat gives the argument area (arg_start, arg_end: fields 48 and 49 of proc(5)) and the initial
environment block (env_start, env_end: 50 and 51), counted after the command name."""


def own_area(first: int) -> tuple[int, int] | None:
    """This process's ARGUMENTS or ENVIRONMENT area as (start, end) addresses; None without /proc."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[first]), int(fields[first + 1])
    except (OSError, IndexError, ValueError):
        return None


def scrub_initial_environment(drop: Callable[[str], bool]) -> None:
    """Overwrite with NULs every ``NAME=value`` of the initial block whose NAME ``drop`` names; a no-op where
    there is no /proc (and so no /proc/PID/environ to read either). Python's ``os.environ`` keeps its copy."""
    area = own_area(ENVIRONMENT)
    if area is None:
        return
    start, end = area
    block, offset = ctypes.string_at(start, end - start), 0
    for entry in block.split(b"\0"):
        if entry and drop(entry.split(b"=", 1)[0].decode(errors="replace")):
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1
