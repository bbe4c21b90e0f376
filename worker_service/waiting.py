"""How the worker waits: until the first of several things happens, and between attempts.

Every wait of the claim loop, the drain and the settle policy ends on an event (a stop signal,
a job finishing, the shutdown running out of time) as well as on its time limit, so that a
SIGTERM or a cancel is honoured at once rather than after the pause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

# Backoff between attempts of a Claim/Complete/Fail/Release while the queue service is
# unreachable.
RETRY_INITIAL_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0


async def first_of(*awaitables: Awaitable[Any], within: float | None = None) -> None:
    """Wait until the first of `awaitables` is done (or `within` s); cancel only what we made."""
    created: list[asyncio.Future[Any]] = []
    futures: list[asyncio.Future[Any]] = []
    for item in awaitables:
        if isinstance(item, asyncio.Future):
            futures.append(item)
        else:
            made: asyncio.Future[Any] = asyncio.ensure_future(item)
            created.append(made)
            futures.append(made)
    try:
        await asyncio.wait(futures, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in created:
            future.cancel()
        if created:
            await asyncio.gather(*created, return_exceptions=True)


class Backoff:
    """Capped exponential pauses between attempts: 0.2 s, 0.4 s, ... up to 5 s."""

    def __init__(
        self, initial: float = RETRY_INITIAL_SECONDS, maximum: float = RETRY_MAX_SECONDS
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self.delay = initial

    def grow(self) -> None:
        self.delay = min(self.delay * 2, self._maximum)

    def reset(self) -> None:
        self.delay = self._initial
