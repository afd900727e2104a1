"""What applications import to run transfers on the queue; nothing here imports the worker runtime (workers/).

The client API (``tasks.submit``, ``tasks.TransferHandle``: client), the task
names and signatures and the client's Celery app (transfer), the order types
(orders) and their signed JSON form (schema, secrets), the ``faspq`` CLI (cli,
progress), ``faspq demo`` and its throwaway deployment (demo, local), and the
Redis model shared with workers (store). May import config/, faspmanager and
third-party libraries; never workers/ (a test holds it to that:
tests/workers/test_split.py). Attributes load lazily, so ``import tasks.orders``
(config/ does) pulls in nothing else.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"submit": "client", "TransferHandle": "client", "ClientStream": "client", "TransferFailed": "transfer"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["ClientStream", "TransferFailed", "TransferHandle", "submit"]
