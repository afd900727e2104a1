"""Work that still uses a file descriptor ends before the descriptor is closed.

A cancelled task runs its cleanup only on a later turn of the loop, and a thread cannot be stopped at all. A
receive cancelled with writes queued, or a digest running on a thread, can still reach its descriptor after
the caller's ``finally`` closed it. By then the kernel may have given that number to the next file the
session opens, and the late write lands there. Every close of a descriptor that tasks or threads use goes
through these helpers first. They wait even through the caller's own cancellation, then re-raise it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import TypeVar

T = TypeVar("T")


async def wait_out(futures: Collection[asyncio.Future]) -> None:
    """Return once every one of ``futures`` is done, even if this task is cancelled meanwhile (the
    cancellation is raised after). Their exceptions are retrieved, not raised: the caller is past caring."""
    interrupted = False
    pending = [f for f in futures if not f.done()]
    while pending:
        try:
            await asyncio.wait(pending)  # unlike gather, a cancelled wait leaves the futures running
        except asyncio.CancelledError:
            interrupted = True
        pending = [f for f in pending if not f.done()]
    for future in futures:
        if not future.cancelled():
            future.exception()
    if interrupted:
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: Collection[asyncio.Future]) -> None:
    """Cancel ``tasks``, then :func:`wait_out` their cleanup (a cancelled receive drains the writes it queued)."""
    for task in tasks:
        task.cancel()
    await wait_out(tasks)


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` on the loop's default executor, as :func:`asyncio.to_thread` does. If cancelled, it waits
    for the thread to return before raising, since ``fn`` may still be truncating or reading the descriptor the
    caller closes next."""
    future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await wait_out([future])
        raise


class Running:
    """Tasks still running, and the first that failed or was cancelled. Done ones are dropped: a terabyte is two
    million pieces, a stream's chunks are without end, a tree may be millions of files."""

    def __init__(self) -> None:
        self._live: set[asyncio.Task] = set()
        self.failed: asyncio.Task | None = None

    def add(self, task: asyncio.Task) -> None:
        self._live.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._live.discard(task)
        if self.failed is None and (task.cancelled() or task.exception() is not None):
            self.failed = task

    async def wait(self) -> None:
        """Return once every task ended; raise the first failure as soon as there is one (as gathering them all
        would)."""
        if self.failed is None:
            await asyncio.gather(*self._live)
        if self.failed is not None:
            self.failed.result()

    async def cancel(self) -> None:
        await cancel_and_wait(list(self._live))
