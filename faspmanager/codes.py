"""ascp error codes: one table for the engine, the library and the workers' retry policy.

The numbers and retryability are those IBM documents for ascp, so a manager
written against IBM's program reads ours the same way.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    FASP_PROTO = 1
    ASCP = 2
    AMBIGUOUS_TARGET = 3
    NO_SUCH_FILE = 4
    NO_PERMS = 5
    NOT_DIR = 6
    IS_DIR = 7
    USAGE = 8
    INTERNAL_ERROR = 11
    TRANSFER_ERROR = 12
    TRANSFER_TIMEOUT = 13
    CONNECTION_ERROR = 14
    CONNECTION_TIMEOUT = 15
    CONNECTION_LOST = 16
    RCVR_SEND_ERROR = 17
    RCVR_RECV_ERROR = 18
    AUTH = 19
    NOTHING = 20
    NOT_REGULAR = 21
    TOO_MANY_FILES = 23
    FILE_TOO_BIG = 24
    NO_SPACE_LEFT = 25
    READ_ONLY_FS = 26
    SOME_FILE_ERRS = 27
    USER_CANCEL = 28
    SOCK_SETUP = 31
    OUT_OF_MEMORY = 32
    THREAD_SPAWN = 33
    UNAUTHORIZED = 34
    DISK_READ = 35
    DISK_WRITE = 36
    AUTHORIZATION = 37
    PEER_ABORTED_SESSION = 39
    DATA_TRANSFER_TIMEOUT = 40
    BAD_PATH = 41
    ALREADY_EXISTS = 42
    STAT_FAILS = 43
    PMTU_BRTT_ERROR = 44
    CONNECTION_ERROR_HTTP = 47
    FILE_ENCRYPTION_ERROR = 48
    FILE_DECRYPTION_PASS = 49
    INSECURE_CONNECTION = 51
    LINK_LOOP = 63


RETRYABLE = frozenset(
    {
        ErrorCode.TRANSFER_ERROR,
        ErrorCode.TRANSFER_TIMEOUT,
        ErrorCode.CONNECTION_ERROR,
        ErrorCode.CONNECTION_TIMEOUT,
        ErrorCode.CONNECTION_LOST,
        ErrorCode.RCVR_SEND_ERROR,
        ErrorCode.RCVR_RECV_ERROR,
        ErrorCode.TOO_MANY_FILES,
        ErrorCode.OUT_OF_MEMORY,
        ErrorCode.THREAD_SPAWN,
        ErrorCode.DISK_READ,
        ErrorCode.DISK_WRITE,
        ErrorCode.AUTHORIZATION,
        ErrorCode.PEER_ABORTED_SESSION,
        ErrorCode.DATA_TRANSFER_TIMEOUT,
        ErrorCode.PMTU_BRTT_ERROR,
    }
)


def is_retryable(code: int) -> bool:
    """Whether a retry of the whole session can help after this code."""
    return code in RETRYABLE


def name_of(code: int) -> str:
    """The symbolic name of a code, or ``CODE_<n>`` for one outside the table."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"CODE_{code}"


class EngineError(Exception):
    """A failure that carries an ascp error code (raised by the engine, read by managers)."""

    def __init__(self, code: int, description: str):
        super().__init__(f"[{int(code)}] {description}")
        self.code = int(code)
        self.description = description

    @property
    def retryable(self) -> bool:
        return is_retryable(self.code)
