"""Jobs whose worker is gone: released seconds after its heartbeat stream breaks.

A worker's heartbeat stream breaks the instant its process dies (the kernel closes the socket),
so a dead worker need not wait out HEARTBEAT_TIMEOUT_SECONDS. When a stream ends without the
client closing it and without the service's own shutdown (queue.py tells them apart), the jobs
last beaten alive on it are handed here, each with the time its last beat on that stream was
written. After STREAM_LOST_GRACE_SECONDS, the time a worker that only lost its connection takes
to reconnect and beat again, they are released by `release_lost_jobs` (migrations/
010_worker_lost.sql): each job still RUNNING under the same lease whose last heartbeat, by the
database's clock, is no newer than that beat. A job beaten since, on any stream of any replica,
is left alone; so is one already settled.

The stream's last beats, not the moment the service notices the break, are what a newer beat
must beat: a connection can die unnoticed (no RST) while its worker reconnects elsewhere and
beats on, and the break noticed later must not release a job that is alive.

The stale sweep (reaper.py) stays the fallback: for a stream that never breaks (a frozen
worker, a partition that keeps the connection open), for a release that could not reach the
database within HEARTBEAT_TIMEOUT_SECONDS, and for releases still waiting when the service stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Collection
from uuid import UUID

from queue_service.errors import StoreUnavailable
from queue_service.store import Store

log = logging.getLogger(__name__)

# Jobs per statement.
MAX_RELEASE = 1000
# After a failed release (the database is unreachable), the next try comes this much later.
RETRY_SECONDS = 1.0

Job = tuple[UUID, int]


class Orphans:
    def __init__(self, store: Store, grace_seconds: float, give_up_seconds: float) -> None:
        self._store = store
        # 0: streams that break release nothing (the heartbeat timeout alone finds dead workers).
        self._grace = grace_seconds
        # A release still failing this long after its stream ended is left to the stale sweep.
        self._give_up = give_up_seconds
        # (when the break was noticed, on the loop's clock; its jobs, each with when its last
        # beat there was written), in the order noticed: with one grace for all, also the order
        # their releases come due.
        self._lost: deque[tuple[float, list[tuple[Job, float]]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waiting: set[asyncio.Task[None]] = set()
        # Jobs looked at (after their grace) and released so far, for tests and logs.
        self.checked = 0
        self.released = 0

    @property
    def enabled(self) -> bool:
        return self._grace > 0

    @property
    def horizon_seconds(self) -> float:
        """How long a stream needs to remember a job's last beat: past this the stale sweep
        releases a job nothing beats, broken stream or not."""
        return self._give_up

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="orphans")

    async def stop(self) -> None:
        """Releases still in their grace are left to the stale sweep."""
        tasks = [*self._waiting, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._lost.clear()

    def stream_lost(
        self, jobs: dict[Job, float], writes: Collection[asyncio.Future[list[str]]]
    ) -> None:
        """A stream broke. Its `jobs`, each with when its last beat there was written on the
        loop's clock (filled in as the stream's `writes` finish: the beats it received before
        the break count), are released after the grace unless beaten since."""
        if self._task is None:
            return
        log.info(
            "a heartbeat stream broke: its %d job(s) are released in %gs unless beaten again",
            len(jobs),
            self._grace,
        )
        if not writes:
            self._note(jobs)
            return
        waiting = asyncio.create_task(self._after(jobs, list(writes)))
        self._waiting.add(waiting)
        waiting.add_done_callback(self._waiting.discard)

    async def _after(self, jobs: dict[Job, float], writes: list[asyncio.Future[list[str]]]) -> None:
        await asyncio.wait(writes)
        self._note(jobs)

    def _note(self, jobs: dict[Job, float]) -> None:
        if jobs:
            self._lost.append((asyncio.get_running_loop().time(), list(jobs.items())))
            self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._lost:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._lost[0][0] + self._grace - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop.time()
            due: list[tuple[float, list[tuple[Job, float]]]] = []
            while self._lost and self._lost[0][0] + self._grace <= now:
                due.append(self._lost.popleft())
            try:
                await self._release(due)
            except StoreUnavailable:
                kept = [(ended, jobs) for ended, jobs in due if now - ended < self._give_up]
                log.warning(
                    "could not release the jobs of %d broken heartbeat stream(s): database "
                    "unavailable; %s",
                    len(due),
                    f"trying again in {RETRY_SECONDS:g}s" if kept else "left to the stale sweep",
                )
                self._lost.extendleft(reversed(kept))
                await asyncio.sleep(RETRY_SECONDS)
            except Exception:
                log.exception("releasing the jobs of broken heartbeat streams failed")

    async def _release(self, due: list[tuple[float, list[tuple[Job, float]]]]) -> None:
        # Each job's silence is counted from its own last beat on the broken stream; `now` is
        # taken just before the statement, whose clock reads a moment later, so the database
        # sees that beat as (a hair) older than it was: it is never taken for a newer one.
        now = asyncio.get_running_loop().time()
        entries = [(job, now - written) for _, jobs in due for job, written in jobs]
        for start in range(0, len(entries), MAX_RELEASE):
            chunk = entries[start : start + MAX_RELEASE]
            rows = await self._store.release_lost(
                [job for job, _ in chunk], [silent for _, silent in chunk]
            )
            self.checked += len(chunk)
            self.released += len(rows)
            for job_id, lease, status in rows:
                log.warning(
                    "released job of a lost worker job_id=%s lease=%s status=%s "
                    "(its heartbeat stream broke)",
                    job_id,
                    lease,
                    status,
                )
