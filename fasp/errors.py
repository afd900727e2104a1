"""Errors every layer of the engine shares: a peer that does not speak the protocol, and local OS errors as ascp codes.

Kept below all layers so that file handling, the data path and the session raise the same types without importing
each other.
"""

import errno

from faspmanager.codes import EngineError, ErrorCode


class ProtocolError(EngineError):
    """A malformed or unexpected message from the peer engine: it is not speaking our protocol (code 11)."""

    def __init__(self, description: str) -> None:
        super().__init__(ErrorCode.FASP_PROTO, description)


_OS_CODES = {
    errno.ENOENT: ErrorCode.NO_SUCH_FILE,
    errno.EACCES: ErrorCode.NO_PERMS,
    errno.EPERM: ErrorCode.NO_PERMS,
    errno.ENOTDIR: ErrorCode.NOT_DIR,
    errno.EISDIR: ErrorCode.IS_DIR,
    errno.ENOSPC: ErrorCode.NO_SPACE_LEFT,
    errno.EROFS: ErrorCode.READ_ONLY_FS,
    errno.EEXIST: ErrorCode.ALREADY_EXISTS,
    errno.ELOOP: ErrorCode.LINK_LOOP,
    errno.ENAMETOOLONG: ErrorCode.BAD_PATH,  # a name this file system cannot hold: no retry will change that
    errno.EMFILE: ErrorCode.TOO_MANY_FILES,
    errno.EFBIG: ErrorCode.FILE_TOO_BIG,
    errno.EDQUOT: ErrorCode.NO_SPACE_LEFT,
}


def os_error_code(exc: OSError, default: int = ErrorCode.DISK_READ) -> int:
    """The ascp code for a local file error (``default`` for an errno without its own code, or none)."""
    return default if exc.errno is None else _OS_CODES.get(exc.errno, default)
