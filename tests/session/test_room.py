"""The sender's files in flight (sending.Room): handed out in batches once all were taken."""

from __future__ import annotations

import asyncio

import pytest

from fasp.session.sending import Room


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_full_room_waits_for_a_batch_then_lets_it_in_at_once() -> None:
    async def main() -> None:
        room = Room(4, 2)
        for _ in range(4):
            await room.acquire()  # free slots: no wait
        entered: list[int] = []

        async def one(i: int) -> None:
            await room.acquire()
            entered.append(i)

        waiters = [asyncio.create_task(one(i)) for i in range(3)]
        await _settle()
        room.release()
        await _settle()
        assert entered == []  # one free slot is not a batch
        room.release()
        await _settle()
        assert entered == [0, 1]  # two are: both enter together, in order
        room.release()
        await _settle()
        assert entered == [0, 1]  # the room filled again: the next waits for a batch of its own
        room.release()
        await _settle()
        assert entered == [0, 1, 2]
        await asyncio.gather(*waiters)

    asyncio.run(main())


def test_a_cancelled_waiter_takes_no_slot() -> None:
    async def main() -> None:
        room = Room(2, 1)
        await room.acquire()
        await room.acquire()
        gone = asyncio.create_task(room.acquire())
        await _settle()
        gone.cancel()
        await _settle()
        room.release()
        await asyncio.wait_for(room.acquire(), 1)  # the slot was not handed to the cancelled one

    asyncio.run(main())


def test_refill_within_the_room() -> None:
    with pytest.raises(ValueError):
        Room(4, 5)
