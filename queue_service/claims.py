"""Claims that wait for work, and that keep the database's claim concurrency low.

Many workers claiming at once would scan the same index head in the database and mostly
collide; a small semaphore makes them take turns in the service instead (each turn is a
sub-millisecond statement), which keeps throughput flat as workers are added.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from queue_service.notify import JobNotifier
from queue_service.store import Release, Row, Store

log = logging.getLogger(__name__)

# How long a waiting claim sleeps before it looks again without being woken: the safety net for
# a lost notification, and how a RETRY job whose backoff ran out is found (nobody announces it).
RECHECK_SECONDS = 1.0


class Claimer:
    def __init__(
        self,
        store: Store,
        notifier: JobNotifier,
        *,
        max_concurrent: int = 2,
        recheck_seconds: float | None = None,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._turns = asyncio.Semaphore(max_concurrent)
        self._recheck_seconds = RECHECK_SECONDS if recheck_seconds is None else recheck_seconds
        self._orphans: set[asyncio.Future[None]] = set()

    async def claim(self, worker_id: str, limit: int, queue: str, wait_seconds: float) -> list[Row]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            woken = self._notifier.event(queue)
            async with self._turns:
                jobs = await self._claim_once(worker_id, limit, queue)
            remaining = deadline - loop.time()
            if jobs or remaining <= 0:
                return jobs
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), min(remaining, self._recheck_seconds))

    async def _claim_once(self, worker_id: str, limit: int, queue: str) -> list[Row]:
        # A caller that goes away while the statement runs must not strand what it claimed until
        # the heartbeat timeout: the statement finishes regardless, and its jobs are handed back.
        statement = asyncio.ensure_future(self._store.claim(worker_id, limit, queue))
        try:
            return await asyncio.shield(statement)
        except asyncio.CancelledError:
            statement.add_done_callback(self._hand_back_orphans)
            raise

    def _hand_back_orphans(self, statement: asyncio.Future[list[Row]]) -> None:
        if statement.cancelled() or statement.exception() is not None or not statement.result():
            return
        rows = statement.result()
        log.warning("claim caller went away; releasing %d job(s)", len(rows))
        task = asyncio.ensure_future(self.release(rows, "claim cancelled by the caller"))
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def release(self, rows: list[Row], reason: str) -> None:
        """Hand claimed jobs back without counting the attempt."""
        try:
            await self._store.release([Release(row["id"], row["lease"], reason) for row in rows])
        except Exception:
            log.exception("could not release %d claimed job(s); the stale sweep will", len(rows))
