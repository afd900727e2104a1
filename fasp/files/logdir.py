"""Logs of fasp-ascp and fasp-server: one line per record whatever a client sent, and log files only
where the operator (or the local user, for -L) said.

Every handler either program installs uses :class:`OneLineFormatter`: control characters (a newline
in a file name or a control message field, an escape sequence for a terminal) are written as
``\\xNN`` escapes, so a client-supplied string can never start a line of its own.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time

from faspmanager.codes import EngineError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1, Unicode line/paragraph separators) as ``\\xNN``."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text
    )


class OneLineFormatter(logging.Formatter):
    """A Formatter whose every record is exactly one line (tracebacks included, escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


def log_to_stderr(fmt: str, level: int = logging.INFO) -> None:
    """The process's stderr log (the root logger's only handler), one line per record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def log_file(directory: str, name: str, fmt: str, *, what: str, code: int) -> logging.Handler:
    """A handler appending to ``directory/name`` (the directory made if needed); EngineError(code)
    saying ``what`` could not be written otherwise, before any transfer starts. The file itself is
    never reached through a symbolic link (O_NOFOLLOW)."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(
            os.path.join(directory, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        stream = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
    except OSError as exc:
        raise EngineError(code, f"{what}: {exc.strerror}") from None
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter(fmt))
    return handler


def session_log_name() -> str:
    """The server's own name for one session's log file (never derived from what a client sent)."""
    return time.strftime("fasp-ascp-server-%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}.log"
