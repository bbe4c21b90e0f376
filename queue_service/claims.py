"""Claims that wait for work, and that keep the database's claim concurrency low.

Many workers claiming at once would scan the same index head in the database and mostly
collide; a small semaphore makes them take turns in the service instead (each turn is a
sub-millisecond statement), which keeps throughput flat as workers are added.
"""

from __future__ import annotations

import asyncio
import contextlib

from queue_service.notify import JobNotifier
from queue_service.store import Row, Store


class Claimer:
    def __init__(
        self,
        store: Store,
        notifier: JobNotifier,
        *,
        max_concurrent: int = 2,
        recheck_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._turns = asyncio.Semaphore(max_concurrent)
        self._recheck_seconds = recheck_seconds

    async def claim(self, worker_id: str, limit: int, queue: str, wait_seconds: float) -> list[Row]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            woken = self._notifier.event(queue)
            async with self._turns:
                jobs = await self._store.claim(worker_id, limit, queue)
            remaining = deadline - loop.time()
            if jobs or remaining <= 0:
                return jobs
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), min(remaining, self._recheck_seconds))
