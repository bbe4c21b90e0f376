"""The stale-job sweep: every STALE_SWEEP_INTERVAL_SECONDS, release RUNNING jobs whose worker
stopped heartbeating or held its lock too long (release_stale_jobs, migrations/job_queue/
release_stale.sql).

A job whose worker died is thereby retried after at most HEARTBEAT_TIMEOUT_SECONDS plus one
interval. Several queue services may sweep at once: SKIP LOCKED makes them share the work.

The sweep never releases a job whose heartbeat the service itself delayed. While the service
cannot reach the database, or cannot write the beats it receives, the workers' beats are lost
through no fault of theirs, and a job may look silent for longer than the timeout when the
database returns (a 12 s outage with a 6 s timeout released a live job 1.8 s after recovery).
So the sweep waits until the service has been steady (pools.Availability) for one heartbeat
interval (HEARTBEAT_INTERVAL_SECONDS, the workers' setting) plus STALE_SWEEP_MARGIN_SECONDS
(5 s: the workers' reconnect backoff cap, worker_service/heartbeats.py): every live worker has
beaten by then, and its beat has landed. Starting counts as recovering too: the workers' streams
reconnect to a new service. A beat that met a locked row is not lost: heartbeat.sql defers it,
and the sweep counts it.
"""

from __future__ import annotations

import asyncio
import logging
import time

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

    def hold_seconds(self) -> float:
        """How long the service must have been steady before it sweeps."""
        return self._config.heartbeat_interval_seconds + self._config.stale_sweep_margin_seconds

    def holding(self) -> float:
        """Seconds left before the sweep may run (0: it may now)."""
        return max(0.0, self.hold_seconds() - self._store.availability.steady_for())

    async def sweep(self) -> int:
        rows = await self._store.release_stale(
            self._config.heartbeat_timeout_seconds,
            self._config.lock_timeout_seconds,
            background=True,
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
        held_since: float | None = None
        while True:
            await asyncio.sleep(self._config.stale_sweep_interval_seconds)
            if (left := self.holding()) > 0:
                if held_since is None:
                    held_since = time.monotonic()
                    log.info(
                        "stale sweep waits until the service has reached the database and "
                        "written every beat for %.1f s (%.1f s to go)",
                        self.hold_seconds(),
                        left,
                    )
                continue
            if held_since is not None:
                log.info("stale sweep resumed after %.1f s", time.monotonic() - held_since)
                held_since = None
            try:
                await self.sweep()
            except StoreUnavailable:
                log.warning("stale sweep skipped: database unavailable")
            except Exception:
                log.exception("stale sweep failed")
