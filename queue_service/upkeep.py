"""Upkeep of the job table, in the background: what keeps it and its stats bounded.

- Retention: every RETENTION_SWEEP_INTERVAL_SECONDS, finished jobs are deleted once they
  finished longer ago than their status's RETENTION_*_SECONDS (SUCCEEDED and CANCELLED after
  7 days, FAILED, the dead letter, after 30; 0 keeps a status for ever), PRUNE_BATCH rows a
  statement (prune_finished in sql/queries.sql: SKIP LOCKED, so a job being retried or read
  under a lock right now is left for the next sweep). Adverts stay: they have no foreign key to
  their job (migrations/005_adverts.sql). Entries of the audit trail of admin actions are deleted
  after RETENTION_AUDIT_SECONDS (90 days; 0 keeps them), oldest first, PRUNE_BATCH a statement.
- Counts: every FOLD_INTERVAL_SECONDS, the count deltas that 008's triggers append are folded
  into one row per queue and status (fold_job_counts), so GetQueueStats reads a few rows.

Several queue services may run it at once: SKIP LOCKED shares the deletes, and a fold skips
what another fold took.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from queue_service.config import Config
from queue_service.errors import StoreUnavailable
from queue_service.store import Store

log = logging.getLogger(__name__)

# Rows per DELETE: short statements, so a sweep never holds many locks or a long transaction.
PRUNE_BATCH = 1000
# Statements per status per sweep; a larger backlog (retention just turned on) continues at the
# next sweep.
PRUNE_BATCHES_PER_SWEEP = 100
FOLD_INTERVAL_SECONDS = 5.0


class Upkeep:
    def __init__(self, store: Store, config: Config) -> None:
        self._store = store
        self._config = config
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(
            asyncio.create_task(self._every(FOLD_INTERVAL_SECONDS, self.fold), name="fold")
        )
        interval = self._config.retention_sweep_interval_seconds
        if interval > 0:
            self._tasks.append(asyncio.create_task(self._every(interval, self.prune), name="prune"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def retention(self) -> dict[str, float]:
        """Each finished status's retention, in seconds; a status kept for ever is absent."""
        config = self._config
        ages = {
            "SUCCEEDED": config.retention_succeeded_seconds,
            "CANCELLED": config.retention_cancelled_seconds,
            "FAILED": config.retention_failed_seconds,
        }
        return {status: age for status, age in ages.items() if age > 0}

    async def prune(self) -> dict[str, int]:
        """Delete the finished jobs and audit entries past their retention; how many of each
        status, and of "audit" entries."""
        deleted: dict[str, int] = {}
        for status, age in self.retention().items():
            total = await self._in_batches(
                functools.partial(self._store.prune_finished, status, age, PRUNE_BATCH)
            )
            if total:
                deleted[status] = total
                log.info("retention deleted %d %s job(s) older than %g s", total, status, age)
        age = self._config.retention_audit_seconds
        if age > 0:
            total = await self._in_batches(
                functools.partial(self._store.prune_audit, age, PRUNE_BATCH)
            )
            if total:
                deleted["audit"] = total
                log.info("retention deleted %d audit entries older than %g s", total, age)
        return deleted

    @staticmethod
    async def _in_batches(statement: Callable[[], Awaitable[int]]) -> int:
        """Run a delete of up to PRUNE_BATCH rows until it deletes fewer, at most
        PRUNE_BATCHES_PER_SWEEP times; how many rows went."""
        total = 0
        for _ in range(PRUNE_BATCHES_PER_SWEEP):
            count = await statement()
            total += count
            if count < PRUNE_BATCH:
                break
        return total

    async def fold(self) -> int:
        return await self._store.fold_counts()

    async def _every(self, interval: float, work: Callable[[], Awaitable[object]]) -> None:
        name = getattr(work, "__name__", "upkeep")
        while True:
            await asyncio.sleep(interval)
            try:
                await work()
            except StoreUnavailable:
                log.warning("%s skipped: database unavailable", name)
            except Exception:
                log.exception("%s failed", name)
