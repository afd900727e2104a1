"""The documented constant classes.

Each is a str (or int) enum whose values are the exact ascp spellings, so a
constant compares equal to the word ascp understands and a raw word can be
turned back into a constant with ``CipherType("aes128")``.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CipherType(StrEnum):
    AES_128 = "aes128"
    AES_192 = "aes192"
    AES_256 = "aes256"


class FileChecksumType(StrEnum):
    MD5 = "md5"
    SHA1 = "sha1"
    SHA_256 = "sha256"
    SHA_384 = "sha384"
    SHA_512 = "sha512"
    NONE = "none"


class FileManifestFormat(StrEnum):
    NONE = "none"
    TEXT = "text"


class OverwritePolicy(StrEnum):
    ALWAYS = "always"
    NEVER = "never"
    DIFF = "diff"
    OLDER = "older"
    DIFF_AND_OLDER = "diff+older"


class PreserveMode(StrEnum):
    NONE = "none"
    NATIVE = "native"
    METAFILE = "metafile"


class ResumeCheck(IntEnum):
    """ascp ``-k`` levels."""

    OFF = 0
    FILE_ATTRIBUTES = 1
    SPARSE_CHECKSUM = 2
    FULL_CHECKSUM = 3


class SymlinkPolicy(StrEnum):
    FOLLOW = "follow"
    COPY = "copy"
    COPY_FORCE = "copy+force"
    SKIP = "skip"


class TransferPolicy(StrEnum):
    FIXED = "fixed"
    HIGH = "high"
    FAIR = "fair"
    LOW = "low"


class SessionState(StrEnum):
    NOTSTARTED = "NOTSTARTED"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


class FileState(StrEnum):
    TRANSFERRING = "TRANSFERRING"
    FINISHED = "FINISHED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"


class TransferEventType(StrEnum):
    """The management events a listener receives: the reference's nine, so a listener that dispatches over them
    covers every event (the programs' other events are ExtraEventType)."""

    INIT = "INIT"
    SESSION = "SESSION"
    STATS = "STATS"
    STOP = "STOP"
    SKIP = "SKIP"
    FILEERROR = "FILEERROR"
    ARGSTOP = "ARGSTOP"
    ERROR = "ERROR"
    DONE = "DONE"


class ExtraEventType(StrEnum):
    """Events the programs send beyond the reference's nine: a file's START, and NOTIFICATION (the job's totals
    with precalculate_job_size). Their stats are kept either way; a listener hears them only from a session with
    ``extended_events`` set, as a reference-written listener would not know them."""

    START = "START"
    NOTIFICATION = "NOTIFICATION"
