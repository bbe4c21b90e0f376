"""The coalescer: what arrives together is flushed together, and every caller gets its answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from queue_service.batching import Coalescer


async def test_items_arriving_during_a_flush_share_the_next_one() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def flush(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            await release.wait()  # hold the first flush in flight
        return [item * 10 for item in items]

    coalescer: Coalescer[int, int] = Coalescer(flush)
    coalescer.start()
    first = asyncio.create_task(coalescer.submit(1))
    while not batches:
        await asyncio.sleep(0)
    rest = [asyncio.create_task(coalescer.submit(n)) for n in range(2, 12)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [n * 10 for n in range(2, 12)]
    assert batches == [[1], list(range(2, 12))]
    await coalescer.stop()


async def test_batches_are_capped() -> None:
    batches: list[int] = []

    async def flush(items: Sequence[int]) -> list[int]:
        batches.append(len(items))
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush, max_batch=4)
    coalescer.start()
    assert await asyncio.gather(*(coalescer.submit(n) for n in range(10))) == list(range(10))
    assert max(batches) <= 4 and sum(batches) == 10
    await coalescer.stop()


async def test_a_failed_flush_fails_every_caller_of_that_batch_only() -> None:
    calls = 0

    async def flush(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database went away")
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush)
    coalescer.start()
    with pytest.raises(RuntimeError, match="went away"):
        await coalescer.submit(1)
    assert await coalescer.submit(2) == 2
    await coalescer.stop()


async def test_a_bad_item_fails_only_its_own_caller() -> None:
    class BadItem(ValueError):
        pass

    async def flush(items: Sequence[int]) -> list[int]:
        if any(item < 0 for item in items):
            raise BadItem("negative")
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush, isolate=(BadItem,))
    coalescer.start()
    results = await asyncio.gather(
        *(coalescer.submit(n) for n in (1, -1, 2, 3)), return_exceptions=True
    )
    assert results[0] == 1 and results[2:] == [2, 3]
    assert isinstance(results[1], BadItem)
    await coalescer.stop()


async def test_batches_are_capped_by_the_rows_their_items_carry() -> None:
    batches: list[list[list[int]]] = []

    async def flush(items: Sequence[list[int]]) -> list[int]:
        batches.append(list(items))
        return [len(item) for item in items]

    coalescer: Coalescer[list[int], int] = Coalescer(flush, max_batch=10, size=len)
    coalescer.start()
    sizes = [4, 4, 4, 12, 1]
    results = await asyncio.gather(*(coalescer.submit([0] * n) for n in sizes))
    assert results == sizes
    # 4 + 4 fit, a third 4 does not; an item larger than the cap goes alone.
    assert [[len(item) for item in batch] for batch in batches] == [[4, 4], [4], [12], [1]]
    await coalescer.stop()


async def test_a_stuck_flush_does_not_hold_what_arrives_after_it() -> None:
    stuck = asyncio.Event()
    flushed: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        flushed.append(list(items))
        if 0 in items:
            await stuck.wait()  # a statement waiting on a lock
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush, patience=0.01)
    coalescer.start()
    held = asyncio.create_task(coalescer.submit(0))
    while not flushed:
        await asyncio.sleep(0)
    assert await asyncio.gather(*(coalescer.submit(n) for n in (1, 2, 3))) == [1, 2, 3]
    assert not held.done()
    stuck.set()
    assert await held == 0
    await coalescer.stop()


async def test_no_more_than_the_bound_of_batches_are_in_flight() -> None:
    gate = asyncio.Event()
    running = 0
    most = 0

    async def flush(items: Sequence[int]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush, max_in_flight=2, patience=0.001)
    coalescer.start()
    calls = []
    for n in range(6):
        calls.append(asyncio.create_task(coalescer.submit(n)))
        await asyncio.sleep(0.01)  # each arrives after the patience of the one before
    assert coalescer.in_flight == 2
    gate.set()
    assert await asyncio.gather(*calls) == list(range(6))
    assert most == 2
    await coalescer.stop()


class BadItem(ValueError):
    pass


def isolating_flush(
    flushed: list[list[int]], stuck: asyncio.Event
) -> Callable[[Sequence[int]], Awaitable[list[int]]]:
    """A batch holding a negative item fails as a whole (BadItem); alone, a negative item fails
    its caller, a 0 waits on `stuck` (a statement waiting on a lock), anything else succeeds."""

    async def flush(items: Sequence[int]) -> list[int]:
        flushed.append(list(items))
        if any(item < 0 for item in items):
            raise BadItem("negative")
        if 0 in items:
            await stuck.wait()
        return list(items)

    return flush


async def test_the_singles_of_a_failed_batch_go_out_together_not_one_after_another() -> None:
    # Review finding 5: the singles were sent one by one inside the batch's flight, so one slow
    # single held the others of its batch and, with the flight, the bound on flights.
    flushed: list[list[int]] = []
    stuck = asyncio.Event()
    coalescer: Coalescer[int, int] = Coalescer(
        isolating_flush(flushed, stuck), isolate=(BadItem,), max_in_flight=1
    )
    coalescer.start()
    held, bad, fine = (coalescer.submit_nowait(n) for n in (0, -1, 5))  # one batch
    async with asyncio.timeout(5):  # on main these waited behind the stuck single for ever
        with pytest.raises(BadItem):
            await bad
        assert await fine == 5
        # The failed batch's flight has landed: the bound of one is free for new items.
        assert coalescer.in_flight == 0
        assert await coalescer.submit(7) == 7
    assert flushed[0] == [0, -1, 5]
    assert sorted(flushed[1:4]) == [[-1], [0], [5]]
    assert not held.done()
    stuck.set()
    assert await held == 0
    await coalescer.stop()


async def test_a_caller_that_went_away_is_not_sent_again_alone() -> None:
    gate = asyncio.Event()
    flushed: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        flushed.append(list(items))
        if len(items) > 1:
            await gate.wait()
            raise BadItem("one of them")
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush, isolate=(BadItem,))
    coalescer.start()
    first, gone, last = (coalescer.submit_nowait(n) for n in (1, 2, 3))
    while not flushed:
        await asyncio.sleep(0)
    gone.cancel()  # its caller's deadline passed while the batch was in flight
    gate.set()
    assert await asyncio.gather(first, last) == [1, 3]
    assert sorted(flushed[1:]) == [[1], [3]]
    await coalescer.stop()


async def test_a_stop_resolves_every_single_of_a_failed_batch() -> None:
    # On main a stop during the singles cancelled the one being sent and left the rest
    # unresolved, their callers waiting for ever.
    flushed: list[list[int]] = []
    stuck = asyncio.Event()
    coalescer: Coalescer[int, int] = Coalescer(isolating_flush(flushed, stuck), isolate=(BadItem,))
    coalescer.start()
    futures = [coalescer.submit_nowait(n) for n in (0, -1, 0, 0)]
    async with asyncio.timeout(5):  # on main the singles went one at a time: only one came
        while len(flushed) < 4:  # the batch and at least three of its singles
            await asyncio.sleep(0)
    await coalescer.stop()
    assert all(future.done() for future in futures)
    assert isinstance(futures[1].exception(), BadItem)
    assert [futures[i].cancelled() for i in (0, 2, 3)] == [True, True, True]


async def test_singles_in_statements_at_once_are_bounded() -> None:
    gate = asyncio.Event()
    running = 0
    most = 0

    async def flush(items: Sequence[int]) -> list[int]:
        nonlocal running, most
        if len(items) > 1:
            raise BadItem("one of them")
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return list(items)

    coalescer: Coalescer[int, int] = Coalescer(flush, isolate=(BadItem,), max_alone=3)
    coalescer.start()
    futures = [coalescer.submit_nowait(n) for n in range(10)]
    async with asyncio.timeout(5):
        while running < 3:
            await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert running == 3
    gate.set()
    assert await asyncio.gather(*futures) == list(range(10))
    assert most == 3
    await coalescer.stop()
