"""Coalescing of concurrent single-job calls into one set-based statement.

Each extra statement costs far more than an extra row inside one (DESIGN.md: about 20 us a row
against 70-500 us a message), so the hot path writes whatever arrived together as one batch.
The batching adds no waiting: the first item is flushed at once, and everything that arrives
while that flush is in flight goes out together in the next one. Under light load a call costs
one statement; under heavy load the batches grow by themselves.

A flush that does not come back soon (a statement waiting on a lock, a slow database) must not
hold everything that arrives after it: once the batch in flight has taken `patience` seconds,
the next one leaves beside it, up to `max_in_flight` at once. A statement's own timeout (the
hot path's pool sets one) bounds how long each can take, and a batch that fails fails only its
own callers.

A batch that fails because of one of its items (`isolate`: a bad value) is sent again item by
item, each in a statement of its own, all at once (at most `max_alone` of them, across batches),
beside the flights and not counted against their bound: a slow single holds neither the other
singles of its batch nor the batches behind it. An item whose caller has gone (its future
cancelled) is not sent again, and every item's future is resolved, by its result, its error or
a cancellation, whatever happens to the flight or the coalescer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """`await submit(item)` returns this item's result from one call of `flush(batch)`."""

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 1000,
        size: Callable[[T], int] | None = None,
        isolate: tuple[type[Exception], ...] = (),
        max_in_flight: int = 4,
        patience: float = 0.1,
        max_alone: int = 16,
    ) -> None:
        self._flush = flush
        # A batch holds items up to this total size (each item is 1 unless `size` says how many
        # rows it carries), and at least one item: it bounds how long a statement runs and
        # holds its rows' locks.
        self._max_batch = max_batch
        self._size = size
        # Errors caused by one item rather than by the database (bad input, a lock it met): a
        # batch that fails with one is retried item by item, so only its own caller sees it.
        self._isolate = isolate
        # The singles of such batches, each its own task, at most `max_alone` in statements.
        self._alone: set[asyncio.Task[None]] = set()
        self._alone_slots = asyncio.Semaphore(max_alone)
        self._max_in_flight = max_in_flight
        self._patience = patience
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flights: set[asyncio.Task[None]] = set()
        self._last_start = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="coalescer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        tasks = [*self._flights, *self._alone]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending.clear()

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    async def submit(self, item: T) -> R:
        return await self.submit_nowait(item)

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """The future of this item's result, for a caller that has other items to hand in
        before it waits (a cancelled future drops the item if its batch has not started)."""
        if self._task is None:
            raise RuntimeError("coalescer not started")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if not self._pending:
                await self._wake.wait()
                continue
            wait = self._until_next_start(loop.time())
            if wait > 0:
                # A new item, a finished flight or the patience running out wakes this up.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if wait == math.inf else wait)
                continue
            taken = self._batch_length()
            batch = self._pending[:taken]
            del self._pending[:taken]
            live = [(item, future) for item, future in batch if not future.cancelled()]
            if live:
                self._last_start = loop.time()
                flight = asyncio.create_task(self._flush_batch(live), name="coalescer-flush")
                self._flights.add(flight)
                flight.add_done_callback(self._landed)

    def _until_next_start(self, now: float) -> float:
        """How long the next batch waits: not at all when nothing is in flight; for the rest of
        the youngest flight's patience while fewer than the bound are; else until one lands."""
        if not self._flights:
            return 0.0
        if len(self._flights) >= self._max_in_flight:
            return math.inf
        return self._last_start + self._patience - now

    def _landed(self, flight: asyncio.Task[None]) -> None:
        self._flights.discard(flight)
        self._wake.set()

    def _batch_length(self) -> int:
        if self._size is None:
            return self._max_batch
        total = 0
        for taken, (item, _) in enumerate(self._pending):
            total += self._size(item)
            if total > self._max_batch:
                return max(taken, 1)
        return len(self._pending)

    async def _flush_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:
            if isinstance(error, self._isolate) and len(batch) > 1:
                # Each on its own, concurrently; this flight lands now and frees its place.
                for single in batch:
                    if not single[1].done():
                        self._send_alone(single)
                return
            # The database failed (or the one item was bad): each caller of the batch hears it.
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _send_alone(self, single: tuple[T, asyncio.Future[R]]) -> None:
        task = asyncio.create_task(self._flush_alone(single), name="coalescer-alone")
        self._alone.add(task)
        task.add_done_callback(self._alone.discard)

    async def _flush_alone(self, single: tuple[T, asyncio.Future[R]]) -> None:
        future = single[1]
        try:
            async with self._alone_slots:
                if not future.done():  # its caller may have gone while it waited
                    await self._flush_batch([single])
        finally:
            if not future.done():
                future.cancel()
