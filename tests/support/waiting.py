"""Waiting on a condition instead of a `sleep` guess: poll until it holds, or fail saying what
was awaited (and, through a callable, what a process printed by then)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    timeout: float = 30.0,
    what: str | Callable[[], str] = "condition",
    interval: float = 0.1,
) -> T:
    """Poll `check` until it returns something truthy (and return that), or fail after timeout.

    `what` may be a callable, so the failure message shows a process's output as of the failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(
                f"timed out after {timeout}s waiting for {described}; last: {value!r}"
            )
        time.sleep(interval)
