"""Log directories (-L here, -R on the server): one way to open DIR/NAME as a log file."""
from __future__ import annotations

import logging
import os

from faspmanager.codes import EngineError


def log_file(directory: str, name: str, fmt: str, *, what: str, code: int) -> logging.FileHandler:
    """A handler appending to ``directory/name`` (the directory made if needed); EngineError(code)
    saying ``what`` could not be written otherwise, before any transfer starts."""
    try:
        os.makedirs(directory, exist_ok=True)
        handler = logging.FileHandler(os.path.join(directory, name))
    except OSError as exc:
        raise EngineError(code, f"{what}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter(fmt))
    return handler
