"""Finding the ascp-compatible program a session runs.

Order: an explicit path, then ``$FASPMANAGER_ASCP``, then IBM's ``ascp`` (PATH,
then its standard install places), then our engine (``fasp-ascp`` on PATH, else
``python -m fasp``). IBM's program wins when present so existing deployments
keep their behaviour.
"""

from __future__ import annotations

import os
import shutil
import sys

IBM_INSTALL_PLACES = (
    "/opt/aspera/bin/ascp",
    "/usr/local/aspera/bin/ascp",
    "~/.aspera/connect/bin/ascp",
    "~/.aspera/sdk/ascp",
    "/Library/Aspera/bin/ascp",
    "/Applications/Aspera Connect.app/Contents/Resources/ascp",
    "~/Applications/Aspera Connect.app/Contents/Resources/ascp",
    "~/Library/Application Support/Aspera/Aspera Connect/bin/ascp",
)


def _is_program(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _program(path: str | os.PathLike[str], origin: str) -> str:
    path = os.path.expanduser(os.fspath(path))
    found = path if os.sep in path else shutil.which(path)
    if not found or not _is_program(found):
        raise FileNotFoundError(f"{origin} {path!r} is not an executable program")
    return found


def locate_ascp(ascp_path: str | os.PathLike[str] | None = None) -> list[str]:
    """The command (program and leading arguments) to run; FileNotFoundError for a bad explicit path."""
    if ascp_path is not None:
        return [_program(ascp_path, "ascp_path")]
    configured = os.environ.get("FASPMANAGER_ASCP")
    if configured:
        return [_program(configured, "FASPMANAGER_ASCP")]
    ibm = shutil.which("ascp") or next((p for p in map(os.path.expanduser, IBM_INSTALL_PLACES) if _is_program(p)), None)
    if ibm:
        return [ibm]
    ours = shutil.which("fasp-ascp")
    return [ours] if ours else [sys.executable, "-m", "fasp"]


def is_our_engine(command: list[str]) -> bool:
    """Whether a command runs our engine (``fasp-ascp``, ``python -m fasp``), which presents the management
    secret and takes flags of its own (--retry-timeout); IBM's ascp knows neither."""
    return os.path.basename(command[0]) == "fasp-ascp" or command[1:3] == ["-m", "fasp"]


def runs_here(command: list[str]) -> bool:
    """Whether ``command`` is our engine run by this very interpreter (``python -m fasp``, or a ``fasp-ascp``
    script whose ``#!`` names it): then a fork of this interpreter with the engine imported runs the same code."""
    if command == [sys.executable, "-m", "fasp"]:
        return True
    if len(command) != 1 or os.path.basename(command[0]) != "fasp-ascp":
        return False
    try:
        with open(command[0], "rb") as script:
            first = script.readline(4096)
    except OSError:
        return False
    interpreter = first[2:].split()[:1] if first.startswith(b"#!") else []
    return bool(interpreter) and os.path.realpath(interpreter[0]) == os.path.realpath(os.fsencode(sys.executable))
