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

The hold has a cap. Under sustained overload (a hot pool with no free connection, heartbeat
batches that time out) every busy moment would start the hold again, and the sweep would never
run: a dead worker's jobs would stay RUNNING for as long as the overload lasts. So once a hold
has lasted HEARTBEAT_TIMEOUT_SECONDS (or the hold itself, if longer) while the database answered
throughout (an outage's time does not count: Availability.reached_for), the sweep runs anyway,
every interval until the hold ends, with a warning.
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
        # When the current hold began (the first check that saw it), and whether its cap struck.
        self._held_since: float | None = None
        self._capped = False

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

    def cap_seconds(self) -> float:
        """How long a hold lasts at most while the database answers."""
        return max(self._config.heartbeat_timeout_seconds, self.hold_seconds())

    def due(self) -> bool:
        """Whether the sweep may run now: the service has been steady long enough, or the hold
        has reached its cap. Logs when a hold begins, when it reaches its cap, and when it ends."""
        left = self.holding()
        now = time.monotonic()
        if left <= 0:
            if self._held_since is not None:
                log.info("stale sweep resumed after %.1f s", now - self._held_since)
                self._held_since = None
                self._capped = False
            return True
        if self._held_since is None:
            self._held_since = now
            log.info(
                "stale sweep waits until the service has reached the database and "
                "written every beat for %.1f s (%.1f s to go)",
                self.hold_seconds(),
                left,
            )
        held = now - self._held_since
        if min(held, self._store.availability.reached_for()) < self.cap_seconds():
            return False
        if not self._capped:
            self._capped = True
            log.warning(
                "stale sweep held for %.1f s while the database answered: calls keep finding no "
                "free connection or beats keep failing to be written (overload?); sweeping "
                "anyway every %.1f s until the service is steady again",
                held,
                self._config.stale_sweep_interval_seconds,
            )
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._config.stale_sweep_interval_seconds)
            if not self.due():
                continue
            try:
                await self.sweep()
            except StoreUnavailable:
                log.warning("stale sweep skipped: database unavailable")
            except Exception:
                log.exception("stale sweep failed")
