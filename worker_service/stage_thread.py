"""Where jobs run: a bounded pool of threads that takes claimed jobs in order and runs them.

Each job runs in one of the pool's threads from its start to its outcome (its stages one after
another), so that the event loop (and with it the heartbeat stream that keeps every job's lease
alive) never blocks on ffmpeg, S3 or an LLM. There are at most --concurrency threads, so at most
that many jobs run at once; jobs claimed ahead wait in the pool's queue, in claim order, and a
thread that finishes one job takes the next at once, without a round trip through the event
loop. Threads are reused from job to job, and a new one is made only when jobs are waiting and
no thread has taken one for STUCK_SECONDS (every thread is blocked in a stage): jobs whose stages
block (ffmpeg, S3, an LLM) get a thread each within a few milliseconds, while quick jobs are run
one after another by the one or two threads that keep up with them. Idle threads are not free
under the GIL: ten threads taking turns at quick jobs cost more than the jobs themselves.

Outcomes go back to the event loop in bulk: the first job to finish wakes the loop, and whatever
finishes before the loop gets to them goes with it, one wake-up for many jobs.

A job that has not started can be withdrawn (`withdraw`: a shutdown hands it back unstarted).
When a running job must stop, its stages are told through the context's stop event, and the job
run does not wait for them. A stage that ignores its stop cannot wedge the pool: its thread is
*abandoned* (threads cannot be killed), it no longer counts against the pool's size, so another
thread is made for the next job, and it ends itself once that stage returns. Whatever such a
stage does meanwhile is fenced off by its stale lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from worker_service.pipeline.base import Stage, StageContext

log = logging.getLogger(__name__)

# Jobs are waiting and no thread has taken one for this long: the threads are all blocked in
# their stages, and another one is made (up to the pool's size).
STUCK_SECONDS = 0.01


class StagesDone:
    """Every stage finished: the job's output as the stages left it, and each stage's seconds."""

    __slots__ = ("output", "timings")

    def __init__(self, output: dict[str, Any], timings: dict[str, float]) -> None:
        self.output = output
        self.timings = timings


# What a job's stages come to: done, or what they raised (JobStopped included: a stage may be
# the first to learn that the lease is gone).
Outcome = StagesDone | BaseException
# Called in the stage thread as each stage starts: its name, and the job's progress so far.
StageStarted = Callable[[str, float], None]
# Called in the stage thread with the job's progress within the stages (0..1).
Progress = Callable[[float], None]


def run_stages(
    stages: Sequence[Stage], ctx: StageContext, started: StageStarted, progress: Progress
) -> Outcome:
    """Run `stages` on `ctx` in this (a pool's) thread; what they did or what they raised.

    The context is closed at the end (its workdir, if a stage made one, deleted) by the thread
    that used it, so that a stage abandoned at a stop never has its folder pulled from under it.
    """
    timings: dict[str, float] = {}
    count = len(stages)

    def report(index: int, fraction: float) -> None:
        progress((index + fraction) / count)

    try:
        for index, stage in enumerate(stages):
            ctx.check_stopped()
            ctx.report_progress = functools.partial(report, index)
            started(stage.name, index / count)
            began = time.perf_counter()
            stage.run(ctx)
            timings[stage.name] = round(time.perf_counter() - began, 3)
        return StagesDone(ctx.output, timings)
    except BaseException as error:  # reported to the loop, classified there
        return error
    finally:
        ctx.close()


class Ticket:
    """One job's place in the pool. Two one-shot tokens settle its races without a shared lock
    (a lock's non-blocking acquire is atomic): `start` goes to the thread that takes the job or
    to a withdrawal, whichever comes first; `end` to the thread that finishes it or to an
    abandonment."""

    __slots__ = ("end", "execute", "executed", "start")

    def __init__(self, execute: Callable[[], object], executed: Callable[[Any], None]) -> None:
        self.execute = execute
        self.executed = executed
        self.start = threading.Lock()
        self.end = threading.Lock()


class StagePool:
    """At most `size` threads serving live jobs; `submit` never blocks the loop."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._work: queue.SimpleQueue[Ticket | None] = queue.SimpleQueue()
        # Threads counted against `size` (an abandoned one is not; changed on the loop only),
        # threads waiting for work and tickets taken so far (both approximate: written by the
        # threads without a lock; the watch only asks whether `taken` moved).
        self._serving = 0
        self._started = 0
        self._waiting = 0
        self._taken = 0
        self._taken_seen = 0
        self._watch: asyncio.TimerHandle | None = None
        self._watch_due = 0.0
        self._names = itertools.count(1)
        self._finished: deque[tuple[Ticket, object]] = deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(self, execute: Callable[[], object], executed: Callable[[Any], None]) -> Ticket:
        """Run `execute()` in a pool thread; `executed(its result)` is then called on the loop
        (unless the ticket was withdrawn or abandoned first)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        ticket = Ticket(execute, executed)
        self._work.put(ticket)
        if self._serving == 0:
            self._start_thread()
        elif self._watch is None and self._work.qsize() > self._waiting:
            self._arm(loop)
        return ticket

    def withdraw(self, ticket: Ticket) -> bool:
        """Take back a job no thread has taken yet (it will never run); False once taken."""
        return ticket.start.acquire(blocking=False)

    def abandon(self, ticket: Ticket) -> None:
        """Stop waiting for a job that was taken: its outcome is dropped, and if its stages are
        still running (ignoring their stop), their thread stops counting against the size."""
        if ticket.end.acquire(blocking=False):
            self._serving -= 1
            log.debug("a stopped job's thread is left to its stage; the pool goes on without it")

    def close(self) -> None:
        """End the threads that wait for work (busy ones end after their job)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for _ in range(self._serving):
            self._work.put(None)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._taken_seen = self._taken
        self._watch_due = loop.time() + STUCK_SECONDS
        self._watch = loop.call_later(STUCK_SECONDS, self._look)

    def _look(self) -> None:
        """While jobs wait: if no thread took one since the last look, the threads are all
        blocked in their stages, and jobs waiting get a thread each (up to the size). A look
        that comes late (the event loop held the GIL, so the threads could not move) judges
        nothing."""
        loop = self._loop
        assert loop is not None
        self._watch = None
        waiting_jobs = self._work.qsize()
        on_time = loop.time() - self._watch_due < STUCK_SECONDS / 2
        # A thread just made has not had its chance yet.
        settled = self._started >= self._serving
        if on_time and settled and waiting_jobs and self._taken == self._taken_seen:
            more = min(waiting_jobs, self._size - self._serving)
            if more > 0:
                log.debug("%d job(s) waiting, every stage thread busy: %d more", waiting_jobs, more)
            for _ in range(more):
                self._start_thread()
        if waiting_jobs:
            self._arm(loop)

    def _start_thread(self) -> None:
        self._serving += 1
        name = f"stages-{next(self._names)}"
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        work, finished = self._work, self._finished
        self._started += 1
        while True:
            self._waiting += 1
            ticket = work.get()
            self._waiting -= 1
            if ticket is None:
                return
            self._taken += 1
            if not ticket.start.acquire(blocking=False):
                continue  # withdrawn before it started: nothing to run
            try:
                result = ticket.execute()
            except BaseException as error:  # the thread must outlive any job
                result = error
            if not ticket.end.acquire(blocking=False):
                return  # abandoned while it ran, and replaced then: this thread retires
            finished.append((ticket, result))
            if not self._wake_pending:
                self._wake_pending = True
                loop = self._loop
                assert loop is not None
                # RuntimeError: the loop is gone (the worker exited while this stage ran).
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._hand_back)

    def _hand_back(self) -> None:
        # Cleared before draining: a thread that finishes after this line wakes the loop again.
        self._wake_pending = False
        finished = self._finished
        while finished:
            ticket, result = finished.popleft()
            try:
                ticket.executed(result)
            except Exception:
                log.exception("a job run failed to take its stages' outcome")
