"""The bridge between a job run on the event loop and its stages in a thread of their own.

Stages run one after another in a daemon thread, so that the event loop (and with it the
heartbeat stream that keeps every job's lease alive) never blocks on ffmpeg, S3 or an LLM. A
stage's start is sent as a beat at once (its name, and the job's progress so far); progress
within a stage is written to the job's heartbeat entry and goes out with the next beat.

When the job must stop, the stages are told through the context's stop event, and the job run
does not wait for them: a stage thread that ignores its stop request is abandoned (threads
cannot be killed), and whatever it does later is fenced off by its stale lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker_service import output
from worker_service.heartbeats import Beating, HeartbeatStream
from worker_service.pipeline.base import Stage, StageContext
from worker_service.waiting import first_of


@dataclass(frozen=True)
class StagesDone:
    """Every stage finished: the job's output as the stages left it, and each stage's seconds."""

    output: dict[str, Any]
    timings: dict[str, float]


class Interrupted:
    """The job was told to stop before its stages finished."""


INTERRUPTED = Interrupted()


async def run_stages(
    stages: Sequence[Stage],
    ctx: StageContext,
    heartbeats: HeartbeatStream,
    entry: Beating,
    stop_requested: asyncio.Event,
    log: logging.LoggerAdapter,  # type: ignore[type-arg]
) -> StagesDone | BaseException | Interrupted:
    """Run `stages` on `ctx` in a thread; return what they did, what they raised (JobStopped
    included: a stage may be first to learn that the lease is gone), or INTERRUPTED once
    `stop_requested` is set."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[BaseException | None] = loop.create_future()
    timings: dict[str, float] = {}

    def report(index: int, fraction: float) -> None:
        # The job's progress over all stages; the next beat carries it.
        entry.progress = (index + fraction) / len(stages)

    def body() -> None:
        for index, stage in enumerate(stages):
            ctx.check_stopped()
            ctx.report_progress = functools.partial(report, index)
            loop.call_soon_threadsafe(heartbeats.beat_now, entry, stage.name, index / len(stages))
            began = time.perf_counter()
            stage.run(ctx)
            timings[stage.name] = round(time.perf_counter() - began, 3)

    def resolve(outcome: BaseException | None) -> None:
        if not finished.done():
            finished.set_result(outcome)

    def thread_main() -> None:
        outcome: BaseException | None = None
        try:
            body()
        except BaseException as error:  # reported to the loop, classified there
            outcome = error
        # RuntimeError: the loop is gone, this job was abandoned at shutdown.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(resolve, outcome)

    thread = threading.Thread(
        target=thread_main, name=f"job-{output.short_id(ctx.job_id)}", daemon=True
    )
    thread.start()
    await first_of(finished, stop_requested.wait())
    if stop_requested.is_set():
        if not finished.done():
            log.info("not waiting for the stage thread; it was told to stop")
        return INTERRUPTED
    error = finished.result()
    if error is not None:
        return error
    return StagesDone(ctx.output, timings)
