"""The human view without ``-M``: one progress line (rewritten with \\r) and a closing summary."""

from __future__ import annotations

import sys
from typing import TextIO


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024:
            return f"{nbytes:.0f}{unit}" if unit == "B" else f"{nbytes:.1f}{unit}"
        nbytes /= 1024
    return f"{nbytes:.1f}TB"


class ProgressLine:
    def __init__(self, quiet: bool, out: TextIO | None = None) -> None:
        self._quiet = quiet
        self._out = out or sys.stderr
        self._line = False

    def emit(self, event: str, fields: dict) -> None:
        if event == "STATS" and not self._quiet:
            seconds = fields["Elapsedusec"] / 1e6
            text = (
                f"{fields.get('File', '')[-40:]:40} {_human(fields['TransferBytes']):>9} "
                f"{fields['Rate'] / 1000:8.1f}Mb/s {seconds:6.1f}s"
            )
            self._out.write("\r" + text)
            self._out.flush()
            self._line = True
        elif event in ("DONE", "ERROR"):
            if self._line:
                self._out.write("\n")
            if event == "DONE" and not self._quiet:
                seconds = max(fields["Elapsedusec"] / 1e6, 1e-6)
                self._out.write(
                    f"Completed: {_human(fields['TransferBytes'])} moved in {seconds:.1f}s "
                    f"({fields['TransferBytes'] * 8 / seconds / 1e6:.1f} Mb/s); files: "
                    f"{fields['TransfersPassed']} passed, {fields['TransfersFailed']} failed, "
                    f"{fields['TransfersSkipped']} skipped\n"
                )
            self._out.flush()
        elif event in ("FILEERROR",) and not self._quiet:
            self._out.write(f"\r{fields['File']}: error {fields['Code']}: {fields['Description']}\n")
