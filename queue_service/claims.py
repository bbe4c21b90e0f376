"""Claims that wait for work, and that keep the database's claim concurrency low.

Many workers claiming at once would scan the same index head in the database and mostly
collide; a small semaphore makes them take turns in the service instead (each turn is a
sub-millisecond statement), which keeps throughput flat as workers are added.

A Claim that finds nothing and may wait joins its queue's line (first come, first woken) and
costs nothing while it waits: no statement runs until there is something to claim.

- Announcements (notify.py) wake waiters from the front of the line until their limits cover
  the jobs announced: one new job wakes one waiter, whose claim takes it; the rest sleep on.
  A waiter that was woken while its own claim was running looks again, since that claim may
  have started before the new jobs were committed; one that leaves with jobs from such a claim
  passes its wake-up on to the next waiter, so an announced job never waits for nobody.
- Jobs announced for later (a backoff, a future run_after) arm the queue's due timer: one timer
  per queue, at the earliest such job, learned from the announcements and from one indexed
  query (next_due) once someone waits in the line after a look that found nothing, after the
  listener reconnects and after each timer.
  When it fires it wakes the waiter at the front to look; a waiter whose look comes back full
  wakes the next one, so a backlog that comes due at once is taken by as many as it needs.
- Once every RECHECK_SECONDS per queue (not per waiter) the front waiter looks anyway: the
  safety net for a job nobody announced (an operator's UPDATE). While the listener is
  reconnecting, that becomes once a second, and every waiter looks again once it is back.
- A new Claim that finds waiters already asleep in its line does not look at all: everything
  announced since they fell asleep has waiters on it, so its own look could only find nothing.
- A line lives only while a Claim is in it: the last one to leave drops it, timers and all, so a
  queue name costs the service memory only while someone waits on it (queue names are bounded
  too: jobqueue.limits). A Claim that takes jobs at its first look never asks for a due time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from queue_service.notify import Announcement
from queue_service.store import Claimed, Release, Store

log = logging.getLogger(__name__)

# The safety re-check of each queue that has waiters, while announcements arrive.
RECHECK_SECONDS = 30.0
# ... and while they do not (the listener is reconnecting).
UNHEARD_RECHECK_SECONDS = 1.0


@dataclass(eq=False)
class _Waiter:
    limit: int
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    # Jobs it was woken for (at most its limit); with `probe`, an unknown number.
    credit: int = 0
    probe: bool = False
    claiming: bool = False
    woken_while_claiming: bool = False
    # Set when it was woken and has not looked since: the wake-up is still unspent.
    unspent: bool = False


@dataclass(eq=False)
class _Line:
    """The waiters of one queue, and what is known of when its next job comes due."""

    asleep: deque[_Waiter] = field(default_factory=deque)
    waiters: int = 0
    # Loop time at which the earliest job announced for later comes due; None: none known.
    due: float | None = None
    due_known: bool = False
    due_timer: asyncio.TimerHandle | None = None
    recheck_timer: asyncio.TimerHandle | None = None
    lookup: asyncio.Task[None] | None = None

    def wake(self, waiter: _Waiter, credit: int, *, probe: bool = False) -> None:
        waiter.credit, waiter.probe, waiter.unspent = credit, probe, True
        waiter.woken_while_claiming = waiter.claiming
        waiter.woken.set()

    def wake_for(self, jobs: int) -> None:
        """Wake waiters from the front until their limits cover `jobs`."""
        while jobs > 0 and self.asleep:
            waiter = self.asleep.popleft()
            credit = min(waiter.limit, jobs)
            self.wake(waiter, credit)
            jobs -= credit

    def wake_front(self) -> None:
        """Wake the front waiter to look, for jobs that nobody counted."""
        if self.asleep:
            self.wake(self.asleep.popleft(), 0, probe=True)

    def wake_all(self) -> None:
        while self.asleep:
            self.wake(self.asleep.popleft(), 0)

    def fall_asleep(self, waiter: _Waiter, *, front: bool = False) -> None:
        waiter.woken.clear()
        waiter.probe = waiter.woken_while_claiming = False
        waiter.credit = 0
        if front:
            self.asleep.appendleft(waiter)
        else:
            self.asleep.append(waiter)


class Claimer:
    def __init__(
        self,
        store: Store,
        *,
        max_concurrent: int = 2,
        recheck_seconds: float | None = None,
    ) -> None:
        self._store = store
        self._turns = asyncio.Semaphore(max_concurrent)
        self._recheck_seconds = recheck_seconds
        self._lines: dict[str, _Line] = {}
        self._heard = False  # the listener is listening: announcements arrive
        self._orphans: set[asyncio.Future[None]] = set()
        # Due-time lookups in flight, also those of lines dropped meanwhile (stop awaits them).
        self._lookups: set[asyncio.Future[None]] = set()
        self._closing = False

    def close(self) -> None:
        """The service is stopping: waiting Claims answer now, and new ones do not wait.

        A Claim still waiting when the server's grace runs out would be cancelled, and its worker
        would see CANCELLED rather than an answer; an empty answer lets it simply claim again.
        """
        self._closing = True
        for line in self._lines.values():
            line.wake_all()

    async def stop(self) -> None:
        """Cancel the timers and due-time lookups (the service is stopping)."""
        lookups = list(self._lookups)
        for line in self._lines.values():
            for timer in (line.due_timer, line.recheck_timer):
                if timer is not None:
                    timer.cancel()
            line.due_timer = line.recheck_timer = None
        for lookup in lookups:
            lookup.cancel()
        await asyncio.gather(*lookups, return_exceptions=True)

    # -- the Claim call ----------------------------------------------------------------------

    async def claim(
        self, worker_id: str, limit: int, queue: str, wait_seconds: float
    ) -> list[Claimed]:
        if wait_seconds <= 0 or self._closing:
            return await self._claim_once(worker_id, limit, queue)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        line = self._lines.setdefault(queue, _Line())
        waiter = _Waiter(limit)
        look = not (self._heard and any(not w.claiming for w in line.asleep))
        line.waiters += 1
        # In the line before the first look, so that a job announced during it is not missed
        # (as one that looks: it needs no due time unless the look finds nothing).
        waiter.claiming = look
        self._sleep(queue, line, waiter)
        try:
            while True:
                if look:
                    waiter.unspent = False
                    waiter.claiming = True
                    try:
                        jobs = await self._claim_once(worker_id, limit, queue)
                    finally:
                        waiter.claiming = False
                    if jobs:
                        self._leave_with(line, waiter, len(jobs))
                        return jobs
                    if waiter.woken.is_set():
                        # Woken during its look, which may have begun before the announced jobs
                        # were committed: look again. Woken before it: others took them.
                        look = waiter.woken_while_claiming
                        self._sleep(queue, line, waiter, front=True)
                        if look:
                            continue
                    else:
                        self._tend(queue, line)  # it waits now: the line needs its due time
                remaining = deadline - loop.time()
                if remaining <= 0 or self._closing:  # also when it was looking at the close
                    return []
                # Not wait_for: a cancellation that meets a wake-up in the same turn would be
                # swallowed by it, and the claim made for a caller that has gone.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await waiter.woken.wait()
                if self._closing:
                    return []
                look = waiter.woken.is_set()
        finally:
            self._leave(queue, line, waiter)

    def _sleep(self, queue: str, line: _Line, waiter: _Waiter, *, front: bool = False) -> None:
        line.fall_asleep(waiter, front=front)
        self._tend(queue, line)

    def _leave_with(self, line: _Line, waiter: _Waiter, claimed: int) -> None:
        """A waiter leaves with jobs: pass on what its wake-up may still be owed."""
        if not waiter.woken.is_set():
            return
        if waiter.woken_while_claiming:
            # Its claim may have begun before the announced jobs were committed.
            self._pass_on(line, waiter)
        elif waiter.probe and claimed >= waiter.limit:
            line.wake_front()  # a full look: there may be more
        waiter.unspent = False

    def _leave(self, queue: str, line: _Line, waiter: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            line.asleep.remove(waiter)
        if waiter.unspent:
            self._pass_on(line, waiter)  # woken, but gone before it looked
        line.waiters -= 1
        self._tend(queue, line)

    def _pass_on(self, line: _Line, waiter: _Waiter) -> None:
        if waiter.probe:
            line.wake_front()
        else:
            line.wake_for(waiter.credit)

    # -- announcements (notify.Subscriber) ----------------------------------------------------

    def announced(self, announcement: Announcement) -> None:
        line = self._lines.get(announcement.queue)
        if line is None:
            return  # nobody waits on it; a line that forms looks up its due time
        if announcement.runnable is None:
            line.wake_all()
        else:
            line.wake_for(announcement.runnable)
        if announcement.due_in is not None:
            due = asyncio.get_running_loop().time() + announcement.due_in
            line.due = due if line.due is None else min(line.due, due)
        self._tend(announcement.queue, line)

    def resync(self) -> None:
        self._heard = True
        for queue, line in self._lines.items():
            line.due_known = False  # announced meanwhile, or not: ask again
            line.wake_all()
            self._tend(queue, line)

    def unheard(self) -> None:
        self._heard = False
        for queue, line in self._lines.items():
            self._tend(queue, line, recheck=True)

    # -- timers -------------------------------------------------------------------------------

    def _tend(self, queue: str, line: _Line, *, recheck: bool = False) -> None:
        """Keep the line's timers right for who is asleep in it and what is known."""
        loop = asyncio.get_running_loop()
        if not line.asleep:
            for timer in (line.due_timer, line.recheck_timer):
                if timer is not None:
                    timer.cancel()
            line.due_timer = line.recheck_timer = None
            if not line.waiters:
                self._forget(queue, line)
            return
        if not line.due_known and line.lookup is None and any(not w.claiming for w in line.asleep):
            line.lookup = lookup = asyncio.ensure_future(self._look_up_due(queue, line))
            self._lookups.add(lookup)
            lookup.add_done_callback(self._lookups.discard)
        if line.due_timer is not None and (line.due is None or line.due_timer.when() > line.due):
            line.due_timer.cancel()
            line.due_timer = None
        if line.due is not None and line.due_timer is None:
            line.due_timer = loop.call_at(line.due, self._due, queue, line)
        if recheck and line.recheck_timer is not None:
            line.recheck_timer.cancel()
            line.recheck_timer = None
        if line.recheck_timer is None:
            line.recheck_timer = loop.call_later(
                self._recheck_interval(), self._recheck, queue, line
            )

    def _recheck_interval(self) -> float:
        if not self._heard:
            return UNHEARD_RECHECK_SECONDS
        return RECHECK_SECONDS if self._recheck_seconds is None else self._recheck_seconds

    def _due(self, queue: str, line: _Line) -> None:
        line.due_timer = None
        line.due, line.due_known = None, False  # ask when the one after it comes due
        line.wake_front()
        self._tend(queue, line)

    def _recheck(self, queue: str, line: _Line) -> None:
        line.recheck_timer = None
        if not self._heard:
            line.wake_all()
        else:
            line.wake_front()
        self._tend(queue, line)

    async def _look_up_due(self, queue: str, line: _Line) -> None:
        # Announcements that arrive while the query runs are kept: it may not see their jobs.
        line.due = None
        try:
            due_in = (await self._store.next_due([queue])).get(queue)
        except Exception:
            # Not asked again until the line forms anew: the safety re-check covers it meanwhile.
            log.warning("could not look up when queue %r next has a job due", queue, exc_info=True)
            due_in = None
        finally:
            line.lookup = None
            line.due_known = True
        if due_in is not None:
            due = asyncio.get_running_loop().time() + max(due_in, 0.0)
            line.due = due if line.due is None else min(line.due, due)
        if self._lines.get(queue) is line:
            self._tend(queue, line)

    def _forget(self, queue: str, line: _Line) -> None:
        """Nobody is in the line: drop it (its timers are cancelled). What it knew of its due
        time is asked again when a line forms anew; a lookup in flight finds it gone."""
        if self._lines.get(queue) is line:
            del self._lines[queue]

    # -- one claim statement ------------------------------------------------------------------

    async def _claim_once(self, worker_id: str, limit: int, queue: str) -> list[Claimed]:
        async with self._turns:
            return await self._statement(worker_id, limit, queue)

    async def _statement(self, worker_id: str, limit: int, queue: str) -> list[Claimed]:
        # A caller that goes away while the statement runs must not strand what it claimed until
        # the heartbeat timeout: the statement finishes regardless, and its jobs are handed back.
        statement = asyncio.ensure_future(self._store.claim(worker_id, limit, queue))
        try:
            return await asyncio.shield(statement)
        except asyncio.CancelledError:
            statement.add_done_callback(self._hand_back_orphans)
            raise

    def _hand_back_orphans(self, statement: asyncio.Future[list[Claimed]]) -> None:
        if statement.cancelled() or statement.exception() is not None or not statement.result():
            return
        rows = statement.result()
        log.warning("claim caller went away; releasing %d job(s)", len(rows))
        task = asyncio.ensure_future(self.release(rows, "claim cancelled by the caller"))
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def release(self, rows: list[Claimed], reason: str) -> None:
        """Hand claimed jobs back without counting the attempt."""
        try:
            await self._store.release([Release(row.id, row.lease, reason) for row in rows])
        except Exception:
            log.exception("could not release %d claimed job(s); the stale sweep will", len(rows))
