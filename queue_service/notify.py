"""Wake-ups for waiting claims: LISTEN on the channel the SQL functions NOTIFY.

Every transition that leaves a job QUEUED or RETRY announces it (notify_queue,
migrations/job_queue/notify.sql) with a JSON payload per queue: how many of its jobs may run now,
and in how many seconds the earliest of the others comes due. One dedicated connection per
service listens and hands each announcement to the waiting claims (queue_service/claims.py),
which wake as many waiters as there are new jobs and arm a timer for the due ones: an idle
worker's Claim returns within milliseconds of a new job, or of its backoff running out, and
waiting costs the database nothing.

A bare queue name (what notify_queue sent before it counted jobs, or an operator's own
`NOTIFY ingestion_jobs, 'media'`) still works: it wakes every waiter of that queue. If the
listening connection breaks, it reconnects with backoff, and then tells the waiting claims to
look again, since announcements made meanwhile were lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Protocol

import psycopg

log = logging.getLogger(__name__)

CHANNEL = "ingestion_jobs"


@dataclass(frozen=True)
class Announcement:
    queue: str
    # How many jobs of the queue may be claimed now; None: unknown (wake every waiter).
    runnable: int | None
    # Seconds until the earliest job announced for later comes due; None: no such job.
    due_in: float | None = None


def parse(payload: str) -> Announcement:
    """The announcement a payload carries: notify_queue's JSON object, or a bare queue name
    (as is anything else an operator may NOTIFY: it wakes the waiters of no real queue)."""
    if payload.startswith("{"):
        with contextlib.suppress(ValueError, KeyError, RecursionError):
            fields = json.loads(payload)
            queue, runnable, due_in = fields["queue"], fields["runnable"], fields.get("due_in")
            if (
                isinstance(queue, str)
                and isinstance(runnable, int)
                and (due_in is None or (isinstance(due_in, int | float) and math.isfinite(due_in)))
            ):
                return Announcement(queue, max(runnable, 0), due_in)
    return Announcement(payload, None)


class Subscriber(Protocol):
    def announced(self, announcement: Announcement) -> None:
        """Jobs of a queue became claimable, or will."""

    def resync(self) -> None:
        """The listener listens (again): announcements made before may have been lost."""

    def unheard(self) -> None:
        """The listener stopped listening: announcements are lost until the next resync."""


class JobNotifier:
    def __init__(self, conninfo: str, subscriber: Subscriber) -> None:
        self._conninfo = conninfo
        self._subscriber = subscriber
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="job-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _relay(self, conn: psycopg.AsyncConnection[object]) -> None:
        """Hand each announcement to the subscriber as it arrives, until the connection breaks.

        Read by a callback on the socket, not by `conn.notifies()`: that generator arms and
        disarms a reader, a future and the connection's lock for each batch, and takes a task
        switch more before a waiting claim is woken (bench/enqueue_cpu.py measures the service's
        CPU per EnqueueJob). The connection runs nothing else, so nothing else reads it.
        What arrived with the LISTEN's own answer stays in psycopg's backlog, unread: the resync
        that follows the LISTEN covers it.
        """
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        loop = asyncio.get_running_loop()
        broken: asyncio.Future[None] = loop.create_future()
        socket = pgconn.socket

        def readable() -> None:
            try:
                pgconn.consume_input()
            except psycopg.Error as error:
                # libpq has closed the socket: unregister it before its number can be reused.
                loop.remove_reader(socket)
                if not broken.done():
                    broken.set_exception(error)
                return
            while (notification := pgconn.notifies()) is not None:
                payload = notification.extra.decode(encoding, errors="replace")
                try:
                    self._subscriber.announced(parse(payload))
                except Exception:  # this one announcement; the others are still handed on
                    log.exception("could not hand on the announcement %r", payload[:200])

        loop.add_reader(socket, readable)
        try:
            await broken
        finally:
            loop.remove_reader(socket)

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
                    # Anything announced while we were not listening: let waiters look again.
                    self._subscriber.resync()
                    await self._relay(conn)
            except asyncio.CancelledError:
                raise
            except psycopg.Error as error:
                self.listening.clear()
                self._subscriber.unheard()
                log.warning("job notifications lost (%s); reconnecting in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
