"""--file-manifest=text: the list of a session's files and how each ended, written when the session ends."""

from __future__ import annotations

import os
from collections.abc import Iterable

from fasp.files.docroot import Files
from faspmanager.codes import EngineError, ErrorCode


def write_manifest(
    files: Files, directory: str, session_id: str, outcomes: Iterable[tuple[str, str, str]], inprogress_suffix: str = ""
) -> None:
    """--file-manifest=text: every file of the session, one line each, in the order they ended:
    ``OUTCOME<TAB>PATH`` for a passed file, ``OUTCOME<TAB>PATH<TAB>DETAIL`` for a skipped one (the
    reason) or a failed one (the error code, a space, the description). OUTCOME is passed, skipped
    or failed; PATH is where the file was read (upload) or landed (download). A tab, newline,
    carriage return or backslash inside a field is written as \\t, \\n, \\r or \\\\. With ``inprogress_suffix``
    (--file-manifest-inprogress-suffix) it is written as NAME+SUFFIX, renamed to NAME once complete.
    Written through ``files``, the session's local handle; a link at the manifest's own name is never followed."""

    def field(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

    path = os.path.join(directory, f"aspera-transfer-{session_id}-manifest.txt")
    try:
        fd = files.open(path + inprogress_suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        with open(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.writelines(
                "\t".join(field(part) for part in (outcome, name, detail) if part) + "\n"
                for outcome, name, detail in outcomes
            )
        if inprogress_suffix:
            files.replace(path + inprogress_suffix, path)
    except OSError as exc:
        raise EngineError(ErrorCode.DISK_WRITE, f"cannot write the manifest {path}: {exc.strerror}") from None
