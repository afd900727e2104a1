"""faspmanager: start, monitor and steer ascp-compatible file transfers.

Works unchanged with IBM's ``ascp`` or with the open engine ``fasp-ascp``; see
the reference documentation (shared/spec/faspmanager-api.txt).
"""

from __future__ import annotations

from .constants import (
    CipherType,
    ExtraEventType,
    FileChecksumType,
    FileManifestFormat,
    FileState,
    OverwritePolicy,
    PreserveMode,
    ResumeCheck,
    SessionState,
    SymlinkPolicy,
    TransferEventType,
    TransferPolicy,
)
from .errors import AuthenticationError, InvalidPathError, SessionStartError, SessionStateError, StreamStateError
from .options import HttpFallbackOptions, TransferOptions
from .orders import (
    BaseTransferOrder,
    FileDownload,
    FileUpload,
    PathArg,
    PersistentDownload,
    PersistentUpload,
    StreamUpload,
)
from .progress import SessionResult, TransferEvent
from .session import Listener, PersistentSession, Session, Stream, StreamSession, _order_problem, _session_for


def session(
    order: BaseTransferOrder, ascp_path: PathArg | None = None, port: int = 0, listener: Listener | None = None
) -> Session:
    """The Session matching the order: Session, PersistentSession or StreamSession."""
    problem = _order_problem(order)
    if problem is not None:
        raise RuntimeError(problem)
    kind = _session_for(order)  # the rule each class's constructor checks its order against
    if kind == StreamSession._runs:
        return StreamSession(order, order.options.chunk_size, ascp_path=ascp_path, listener=listener, port=port)
    cls = PersistentSession if kind == PersistentSession._runs else Session
    return cls(order, ascp_path=ascp_path, listener=listener, port=port)


__all__ = [
    "AuthenticationError",
    "BaseTransferOrder",
    "CipherType",
    "ExtraEventType",
    "FileChecksumType",
    "FileDownload",
    "FileManifestFormat",
    "FileState",
    "FileUpload",
    "HttpFallbackOptions",
    "InvalidPathError",
    "OverwritePolicy",
    "PersistentDownload",
    "PersistentSession",
    "PersistentUpload",
    "PreserveMode",
    "ResumeCheck",
    "Session",
    "SessionResult",
    "SessionStartError",
    "SessionState",
    "SessionStateError",
    "Stream",
    "StreamSession",
    "StreamStateError",
    "StreamUpload",
    "SymlinkPolicy",
    "TransferEvent",
    "TransferEventType",
    "TransferOptions",
    "TransferPolicy",
    "session",
]
