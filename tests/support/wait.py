"""Polling a condition until a deadline, the one waiting loop the tests share."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds (checked every ``step``, and once at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
