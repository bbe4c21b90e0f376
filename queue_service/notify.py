"""Wake-ups for waiting claims: LISTEN on the channel the SQL functions NOTIFY.

Every transition that leaves a job runnable at once (enqueue, release, retry, the stale sweep)
calls notify_queue (migrations/job_queue/notify.sql): pg_notify('ingestion_jobs', queue). One
dedicated connection listens and sets an event per queue, so an idle worker's Claim returns
within milliseconds of a new job instead of polling the database. If the listening connection
breaks, it reconnects with backoff; waiting claims re-check on their own every
`claims.RECHECK_SECONDS` meanwhile (and to see RETRY jobs whose backoff has expired, which nobody
announces).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "ingestion_jobs"


class JobNotifier:
    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="job-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def event(self, queue: str) -> asyncio.Event:
        """The event the next notification for `queue` sets. Take it before looking for work,
        so a job enqueued between the look and the wait is not missed."""
        return self._events[queue]

    def wake(self, queue: str) -> None:
        event = self._events.pop(queue, None)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        for queue in list(self._events):
            self.wake(queue)

    async def _listen_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute("LISTEN ingestion_jobs")  # the CHANNEL
                    self.listening.set()
                    delay = 0.2
                    # Anything enqueued while we were not listening: let waiters look again.
                    self.wake_all()
                    async for notification in conn.notifies():
                        self.wake(notification.payload)
            except asyncio.CancelledError:
                raise
            except psycopg.Error as error:
                self.listening.clear()
                log.warning("job notifications lost (%s); reconnecting in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
