"""How tests run our programs: the engine and fasp-server as this interpreter's modules, with this checkout first.

One place names the modules (``python -m fasp``, ``python -m fasp.server.frontdoor``), so the tests follow
when they move.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE = [sys.executable, "-m", "fasp"]
"""argv of the engine (fasp-ascp)."""
SERVER = [sys.executable, "-m", "fasp.server.frontdoor"]
"""argv of fasp-server."""


def pythonpath() -> str:
    """PYTHONPATH with the repository first, so a child process imports this checkout's packages."""
    entries = [str(REPO_ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    return os.pathsep.join(dict.fromkeys(p for p in entries if p))


def engine_program(directory: Path) -> Path:
    """An executable ``fasp-ascp`` in ``directory`` that runs ENGINE, for what wants a program path (faspmanager)."""
    program = directory / "fasp-ascp"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fasp "$@"\n')
    program.chmod(0o755)
    return program
