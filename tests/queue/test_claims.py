"""The waiting line's rules, against a store that answers as the test says (no database): who
looks again, who passes a wake-up on, and when the due timer wakes the front waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from queue_service.claims import Claimer
from queue_service.notify import Announcement

QUEUE = "default"


class Store:
    """claim() answers from `answers` in turn, each after its own event is set when one is
    given; next_due() answers `due`."""

    def __init__(self, *answers: tuple[list[Any], asyncio.Event | None]) -> None:
        self.answers = list(answers)
        self.looks = 0
        self.due: dict[str, float] = {}
        self.due_lookups = 0

    async def claim(self, worker_id: str, limit: int, queue: str) -> list[Any]:
        self.looks += 1
        jobs, release = self.answers.pop(0) if self.answers else ([], None)
        if release is not None:
            await release.wait()
        return jobs

    async def next_due(self, queues: Sequence[str]) -> dict[str, float]:
        self.due_lookups += 1
        return {queue: self.due[queue] for queue in queues if queue in self.due}


def claimer(store: Store) -> Claimer:
    result = Claimer(store, recheck_seconds=60)  # type: ignore[arg-type]
    result.resync()  # the listener listens
    return result


def asleep(claims: Claimer) -> int:
    """How many waiters sleep in the queue's line, none of them looking."""
    line = claims._lines.get(QUEUE)
    return sum(not w.claiming for w in line.asleep) if line is not None else 0


async def until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never held")


async def test_a_waiter_woken_during_its_own_look_looks_again() -> None:
    # Its look may have begun before the announced job was committed: it found nothing.
    look = asyncio.Event()
    store = Store(([], look), (["job"], None))
    line = claimer(store)
    claim = asyncio.create_task(line.claim("w", 1, QUEUE, 30))
    await until(lambda: store.looks == 1)
    line.announced(Announcement(QUEUE, 1))
    look.set()
    assert await asyncio.wait_for(claim, 1) == ["job"]
    assert store.looks == 2


async def test_a_waiter_that_leaves_with_jobs_from_such_a_look_passes_its_wake_up_on() -> None:
    first, second = asyncio.Event(), asyncio.Event()
    store = Store((["older job"], first), ([], second), (["announced job"], None))
    line = claimer(store)
    leaving = asyncio.create_task(line.claim("w1", 1, QUEUE, 30))
    staying = asyncio.create_task(line.claim("w2", 1, QUEUE, 30))
    await until(lambda: store.looks == 2)
    line.announced(Announcement(QUEUE, 1))  # wakes w1, the front, during its look
    first.set()
    assert await asyncio.wait_for(leaving, 1) == ["older job"]
    second.set()
    # w1's look took a job that was there before: the announced one is w2's to look for.
    assert await asyncio.wait_for(staying, 1) == ["announced job"]


async def test_one_announced_job_wakes_the_front_waiter_only() -> None:
    store = Store()
    line = claimer(store)
    waiting = [asyncio.create_task(line.claim(f"w{i}", 1, QUEUE, 30)) for i in range(3)]
    await until(lambda: asleep(line) == 3)
    looks = store.looks
    store.answers = [(["job"], None)]
    line.announced(Announcement(QUEUE, 1))
    done, pending = await asyncio.wait(waiting, timeout=1, return_when=asyncio.FIRST_COMPLETED)
    assert [task.result() for task in done] == [["job"]]
    assert waiting[0] in done  # first come, first woken
    await asyncio.sleep(0.05)
    assert store.looks == looks + 1
    for task in pending:
        task.cancel()


async def test_the_due_timer_wakes_the_front_waiter_when_a_job_comes_due() -> None:
    store = Store()
    store.due[QUEUE] = 0.05
    line = claimer(store)
    claim = asyncio.create_task(line.claim("w", 1, QUEUE, 30))
    await until(lambda: store.looks == 1)
    store.answers = [(["due job"], None)]
    assert await asyncio.wait_for(claim, 2) == ["due job"]


async def test_a_wake_up_owed_to_a_waiter_that_went_away_goes_to_the_next() -> None:
    store = Store()
    line = claimer(store)
    gone = asyncio.create_task(line.claim("w1", 1, QUEUE, 30))
    await until(lambda: asleep(line) == 1)
    staying = asyncio.create_task(line.claim("w2", 1, QUEUE, 30))
    await until(lambda: asleep(line) == 2)
    line.announced(Announcement(QUEUE, 1))  # owed to w1 ...
    gone.cancel()  # ... which goes before it looks
    store.answers = [(["job"], None)]
    assert await asyncio.wait_for(staying, 1) == ["job"]


async def test_a_line_is_dropped_with_its_timers_when_its_last_waiter_leaves() -> None:
    # Issue 11, item 4: a line per queue name was kept for good, so Claims with many distinct
    # names grew the service without bound.
    store = Store()
    claims = claimer(store)
    for name in ("a", "b"):
        store.due[name] = 3600.0  # a job due later: the line learns of it and arms a timer
    waiting = [asyncio.create_task(claims.claim("w", 1, name, 30)) for name in ("a", "b", "c")]
    await until(lambda: len(claims._lines) == 3 and store.due_lookups == 3)
    await until(lambda: all(line.due_timer for q, line in claims._lines.items() if q != "c"))
    timers = [line.due_timer for line in claims._lines.values() if line.due_timer is not None]
    timers += [line.recheck_timer for line in claims._lines.values()]
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert claims._lines == {}
    assert all(timer is not None and timer.cancelled() for timer in timers)

    # Waits that end on their own, and claims that do not wait, leave nothing either.
    assert await claims.claim("w", 1, "d", 0.01) == []
    assert await claims.claim("w", 1, "e", 0) == []
    assert claims._lines == {}


async def test_a_claim_that_takes_jobs_at_once_asks_no_due_time() -> None:
    store = Store(*[(["job"], None) for _ in range(3)])
    claims = claimer(store)
    for _ in range(3):
        assert await claims.claim("w", 1, QUEUE, 30) == ["job"]
    assert store.due_lookups == 0
    assert claims._lines == {}


async def test_a_due_time_lookup_that_ends_after_its_line_is_gone_changes_nothing() -> None:
    store = Store()
    answer = asyncio.Event()
    next_due = store.next_due

    async def slow(queues: Sequence[str]) -> dict[str, float]:
        await answer.wait()
        return await next_due(queues)

    store.next_due = slow  # type: ignore[method-assign]
    claims = claimer(store)
    waiting = asyncio.create_task(claims.claim("w", 1, QUEUE, 30))
    await until(lambda: bool(claims._lookups))
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert claims._lines == {}
    answer.set()
    await until(lambda: not claims._lookups)
    assert claims._lines == {}
    await claims.stop()


async def test_a_close_answers_waiting_and_looking_claims_empty_and_new_ones_do_not_wait() -> None:
    held = asyncio.Event()
    store = Store(([], None), ([], held))
    line = claimer(store)
    asleep_claim = asyncio.create_task(line.claim("asleep", 1, QUEUE, 30))
    await until(lambda: asleep(line) == 1)
    # The second finds the first asleep, so it sleeps without a look; two announced jobs wake
    # both: the front one's look is held by the test, the other's finds nothing.
    looking_claim = asyncio.create_task(line.claim("looking", 1, QUEUE, 30))
    await until(lambda: asleep(line) == 2)
    line.announced(Announcement(QUEUE, 2))
    await until(lambda: store.looks == 3)
    line.close()
    held.set()
    assert await asyncio.wait_for(asyncio.gather(asleep_claim, looking_claim), 1) == [[], []]
    assert await asyncio.wait_for(line.claim("late", 1, QUEUE, 30), 1) == []
