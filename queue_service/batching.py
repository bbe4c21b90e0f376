"""Coalescing of concurrent single-job calls into one set-based statement.

Each extra statement costs far more than an extra row inside one (DESIGN.md: about 20 us a row
against 70-500 us a message), so the hot path writes whatever arrived together as one batch.
The batching adds no waiting: the first item is flushed at once, and everything that arrives
while that flush is in flight goes out together in the next one. Under light load a call costs
one statement; under heavy load the batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import logging
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
    ) -> None:
        self._flush = flush
        # A batch holds items up to this total size (each item is 1 unless `size` says how many
        # rows it carries), and at least one item: it bounds how long a statement runs and
        # holds its rows' locks.
        self._max_batch = max_batch
        self._size = size
        # Errors caused by one item rather than by the database (bad input): a batch that fails
        # with one is retried item by item, so only its own caller sees the error.
        self._isolate = isolate
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="coalescer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for _, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending.clear()

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
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                taken = self._batch_length()
                batch = self._pending[:taken]
                del self._pending[:taken]
                live = [(item, future) for item, future in batch if not future.cancelled()]
                if live:
                    await self._flush_batch(live)

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
        except Exception as error:
            if isinstance(error, self._isolate) and len(batch) > 1:
                for single in batch:
                    await self._flush_batch([single])
                return
            # The database failed (or the one item was bad): each caller of the batch hears it.
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
