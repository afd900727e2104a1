"""faspmanager: start, monitor and steer ascp-compatible file transfers.

Works unchanged with IBM's ``ascp`` or with the open engine ``fasp-ascp``; see
the reference documentation (shared/spec/faspmanager-api.txt).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    from .session import Listener, PersistentSession, Session, Stream, StreamSession

_HOMES = ("constants", "errors", "options", "orders", "progress", "session")
"""The submodules the public names come from, loaded on first use: the engine imports only faspmanager.codes
and its like, and loading the library's options, orders and sessions cost its every start about 5 ms of CPU."""


def __getattr__(name: str) -> object:
    """A public name (or a submodule of :data:`_HOMES`) from its home, imported now and kept here."""
    if name in _HOMES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in __all__:
        for home in _HOMES:
            module = importlib.import_module(f"{__name__}.{home}")
            if hasattr(module, name):
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(ModuleType):
    """Keeps ``faspmanager.session`` the function: loading the submodule of that name (lazily now, after this
    module ran) would otherwise set the package's attribute to the submodule."""

    def __setattr__(self, name: str, value: object) -> None:
        if not (name == "session" and isinstance(value, ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def session(
    order: BaseTransferOrder, ascp_path: PathArg | None = None, port: int = 0, listener: Listener | None = None
) -> Session:
    """The Session matching the order: Session, PersistentSession or StreamSession."""
    from .session import PersistentSession, Session, StreamSession, _order_problem, _session_for

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
