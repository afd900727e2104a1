"""How much the receiving role asks for at once: bytes, not a count of pieces per file.

A piece is asked for only while the bytes requested and not yet landed stay under what the data channel says
the path holds (:meth:`fasp.datapath.datachannel.DataChannel.window_bytes`: the measured rate x RTT, with room
for growth and for the holes loss leaves), whichever files they belong to, so one large file can fill a long
fat path alone. A piece waiting only for a hole's resend holds just the hole's bytes, so it stalls no new
request. The number of pieces held at once is bounded too (each holds transport state, and a small file's
piece its bytes in memory): MIN_PIECES, or two windows' worth of pieces on a faster path.

Memory: at most ``window + piece`` bytes requested and unlanded, in at most ``max(MIN_PIECES, 2 * window /
piece)`` pieces, so what the receiver holds grows with the window the path needs, never faster.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from fasp.datapath.recvstate import WINDOW_CAP
from fasp.options.peer import PeerOptions

PIECE = 512 * 1024
"""Bytes per piece: small enough that a crash loses little, large enough to amortise a control message."""


def piece_size(opts: PeerOptions) -> int:
    """The most bytes a receiver of ours asks for in one piece: PIECE, or a -g/-G block if larger (a transport block
    never spans two pieces). Both sides hold the same options (hello), so a sender holds its receiver to it."""
    return max(PIECE, opts.read_size, opts.write_size)


MIN_PIECES = 64
"""Pieces held at once whatever the window: room for every small file the sender offers at once (its
FILES_IN_FLIGHT), each a piece of its own."""
MAX_PIECES = max(MIN_PIECES, 2 * WINDOW_CAP // PIECE)
"""The most pieces a receiver of ours holds at once: its window never exceeds WINDOW_CAP, its pieces are PIECE
bytes or more."""


class RequestWindow:
    """Admits piece requests in the order they wait, while ``budget()`` bytes (read at every decision: it
    follows the path) are not yet outstanding. ``piece``: the usual piece size, for the count bound."""

    def __init__(self, budget: Callable[[], int], piece: int) -> None:
        self._budget = budget
        self._piece = piece
        self.outstanding = 0  # bytes requested and not yet landed
        self.pieces = 0  # pieces admitted and not yet released
        self.peak = 0  # the most bytes ever outstanding (for stats and tests)
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _room(self) -> bool:
        budget = self._budget()
        return self.outstanding < budget and self.pieces < max(MIN_PIECES, 2 * budget // self._piece)

    def _take(self, size: int) -> None:
        self.outstanding += size
        self.pieces += 1
        self.peak = max(self.peak, self.outstanding)

    async def acquire(self, size: int) -> None:
        """Wait for room, then count a piece of ``size`` bytes as outstanding (until :meth:`release`)."""
        if not self._waiters and self._room():
            self._take(size)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if not fut.cancelled():  # admitted as it was cancelled: give the room back
                self.release(size)
            elif entry in self._waiters:
                self._waiters.remove(entry)
            raise

    def landed(self, size: int) -> None:
        """``size`` bytes of an admitted piece were written."""
        self.outstanding -= size
        self._admit()

    def release(self, unlanded: int) -> None:
        """An admitted piece is done with (landed, failed or abandoned); ``unlanded`` of its bytes never landed."""
        self.outstanding -= unlanded
        self.pieces -= 1
        self._admit()

    def _admit(self) -> None:
        waiters = self._waiters
        while waiters and self._room():
            size, fut = waiters.popleft()
            if fut.done():  # cancelled while waiting
                continue
            self._take(size)
            fut.set_result(None)
