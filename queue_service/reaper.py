"""The stale-job sweep: every STALE_SWEEP_INTERVAL_SECONDS, release RUNNING jobs whose worker
stopped heartbeating or held its lock too long (release_stale_jobs, migrations/job_queue/
release_stale.sql).

A job whose worker died is thereby retried after at most HEARTBEAT_TIMEOUT_SECONDS plus one
interval. Several queue services may sweep at once: SKIP LOCKED makes them share the work.
"""

from __future__ import annotations

import asyncio
import logging

from queue_service.config import Config
from queue_service.errors import StoreUnavailable
from queue_service.store import Store

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, store: Store, config: Config) -> None:
        self._store = store
        self._config = config
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._config.stale_sweep_interval_seconds > 0:
            self._task = asyncio.create_task(self._run(), name="reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def sweep(self) -> int:
        rows = await self._store.release_stale(
            self._config.heartbeat_timeout_seconds, self._config.lock_timeout_seconds
        )
        for row in rows:
            log.warning(
                "released stale job job_id=%s reason=%s status=%s",
                row["job_id"],
                row["reason"],
                row["status"],
            )
        return len(rows)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._config.stale_sweep_interval_seconds)
            try:
                await self.sweep()
            except StoreUnavailable:
                log.warning("stale sweep skipped: database unavailable")
            except Exception:
                log.exception("stale sweep failed")
