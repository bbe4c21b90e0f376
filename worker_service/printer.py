"""The worker's stdout: the checklist's lines, written in bulk.

A worker draining thousands of jobs a second says two lines per job; a write (a system call) per
line would cost more than the job. Lines are gathered and written together: when the worker goes
idle or is about to wait (`flush`, called by the worker), before it exits, and otherwise at most
FLUSH_SECONDS after the first line of a batch, so that a reader of the output (an operator, a
test waiting for a line) still sees every line promptly.

`say` may be called from any thread (a job's first line is said by the pool thread that starts
it); writing happens on the event loop's thread, or at once when no loop is running.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import TextIO

FLUSH_SECONDS = 0.05


class Printer:
    def __init__(self, stream: TextIO | None = None) -> None:
        # None: whatever sys.stdout is when the lines are written.
        self._stream = stream
        # Appended to by any thread, emptied on the loop's (deque operations are atomic).
        self._lines: deque[str] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        # A flush is scheduled (or being scheduled) for the lines gathered so far.
        self._armed = False
        self._timer: asyncio.TimerHandle | None = None

    def say(self, line: str) -> None:
        """One output line, written within FLUSH_SECONDS (at once when no loop is running)."""
        self._lines.append(line)
        if self._armed:
            return  # the flush to come writes this line too
        self._armed = True
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = self._loop
            if loop is None or loop.is_closed():
                self.flush()  # start-up and exit lines, and operator commands
                return
            try:
                loop.call_soon_threadsafe(self._arm)
            except RuntimeError:  # the loop closed meanwhile
                self.flush()
            return
        self._arm()

    def _arm(self) -> None:
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write what was said (on the loop's thread, or with no loop running)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Disarmed first: a line said from here on arms the next flush.
        self._armed = False
        pending = self._lines
        lines = [pending.popleft() for _ in range(len(pending))]
        stream = self._stream or sys.stdout
        if lines:
            stream.write("\n".join(lines) + "\n")
        stream.flush()
