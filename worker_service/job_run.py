"""One claimed job's life, from its claim to its settlement (or the loss of its lease):

    claimed -> validating_input -> pipeline_running -> <each stage> -> Complete (succeeded)

The job beats on the worker's heartbeat stream from its claim to its end, and what the queue
service answers stops it: CANCEL -> the stages are told to stop and the job is failed, which the
service records as CANCELLED; LEASE_LOST -> the job belongs to someone else now, so this worker
drops it without another call. The worker's shutdown stops it too, and the job is handed back.

A `JobRun` is given everything it uses (`JobRunDeps`); it knows nothing of the claim loop, and
nothing of what a job's input means: the pipeline checks the input and runs the stages.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jobqueue import rpc
from jobqueue.v1 import job_pb2
from jobqueue.v1 import queue_service_pb2 as queue_pb
from worker_service import output
from worker_service.client import QueueCalls
from worker_service.heartbeats import Beating, HeartbeatStream
from worker_service.job_log import JobLog
from worker_service.pipeline.base import Pipeline, StageContext
from worker_service.pipeline.errors import JobStopped, StageError
from worker_service.settle import Settler, job_output, next_step
from worker_service.stage_thread import Interrupted, StagesDone, run_stages
from worker_service.stop_reason import StopReason

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """The worker's tally of settled jobs, printed when it exits."""

    processed: int = 0
    succeeded: int = 0
    failed: int = 0

    def record(self, *, success: bool) -> None:
        self.processed += 1
        if success:
            self.succeeded += 1
        else:
            self.failed += 1


@dataclass(frozen=True)
class JobRunDeps:
    """What every job run of one worker uses, handed over explicitly."""

    client: QueueCalls
    heartbeats: HeartbeatStream
    pipeline: Pipeline
    worker_id: str
    say: Callable[[str], None]
    counters: Counters
    # Set when the worker's shutdown is out of time: Complete/Fail/Release stop retrying.
    give_up: asyncio.Event


class JobRun:
    def __init__(self, job: job_pb2.Job, deps: JobRunDeps) -> None:
        self.job = job
        self.job_id = job.id
        self.lease = job.lease
        self.deps = deps
        self.input = rpc.struct_to_dict(job.input)
        self.log = JobLog(log, job.id, job.attempts, deps.worker_id)
        self.stop_reason: StopReason | None = None
        # The stage thread's view of a stop request, and the event loop's.
        self.stop_event = threading.Event()
        self._stopped = asyncio.Event()
        self._started = time.monotonic()
        self._settler = Settler(
            deps.client,
            job.id,
            job.lease,
            self.log,
            lease_lost=lambda: self.stop_reason is StopReason.LEASE_LOST,
            give_up=deps.give_up,
        )

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def on_heartbeat_answer(self, action: int) -> None:
        if action == queue_pb.HEARTBEAT_ACTION_LEASE_LOST:
            self.stop(StopReason.LEASE_LOST)
        elif action == queue_pb.HEARTBEAT_ACTION_CANCEL:
            self.stop(StopReason.CANCEL)

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is None or reason is StopReason.LEASE_LOST:
            if self.stop_reason is not reason:
                self.log.info("stopping: %s", reason.value)
            self.stop_reason = reason
        self.stop_event.set()
        self._stopped.set()

    async def run(self) -> None:
        label = output.source_label(self.input)
        self.deps.say(
            output.processing(self.job_id, self.job.attempts, self.job.max_attempts, label)
        )
        self.log.info("claimed (lease %d) input=%s", self.lease, label)
        entry = self.deps.heartbeats.register(self.job_id, self.lease, self.on_heartbeat_answer)
        try:
            await self._run(entry)
        finally:
            self.deps.heartbeats.unregister(entry)

    async def _run(self, entry: Beating) -> None:
        heartbeats, pipeline = self.deps.heartbeats, self.deps.pipeline
        heartbeats.beat_now(entry, stage="validating_input", progress=0.0)
        try:
            pipeline.check_input(self.input)
        except Exception as error:  # a StageError names the problem; anything else is a bug
            await self._failed(error)
            return
        heartbeats.beat_now(entry, stage="pipeline_running", progress=0.0)
        workdir = Path(tempfile.mkdtemp(prefix=f"job-{output.short_id(self.job_id)}-"))
        ctx = StageContext(
            job_id=self.job_id,
            lease=self.lease,
            input=dict(self.input),
            workdir=workdir,
            stop_event=self.stop_event,
        )
        try:
            result = await run_stages(
                pipeline.stages, ctx, heartbeats, entry, self._stopped, self.log
            )
        finally:
            # An abandoned stage thread may still be writing here; it is stopping anyway.
            shutil.rmtree(workdir, ignore_errors=True)
        if isinstance(result, JobStopped):
            # A stage learnt first that the lease is gone (e.g. StoreAdvert answered ABORTED).
            self.stop(StopReason.LEASE_LOST)
        if isinstance(result, Interrupted | JobStopped):
            await self._stopped_job()
        elif isinstance(result, StagesDone):
            await self._succeeded(result)
        else:
            await self._failed(result)

    async def _succeeded(self, done: StagesDone) -> None:
        result = job_output(done.output, done.timings)
        if await self._settler.complete(result) is None:
            self._lost()
            return
        self.log.info("succeeded in %.1fs", self.elapsed)
        self.deps.say(output.succeeded(self.job_id, self.elapsed, result.get("ad_id")))
        self.deps.counters.record(success=True)

    async def _failed(self, error: BaseException) -> None:
        if isinstance(error, StageError):
            code, message, retryable = error.code, error.message, error.retryable
            self.log.warning("stage failed: %s: %s (retryable=%s)", code, message, retryable)
        else:
            # Unclassified: assume transient, so that a flaky dependency does not dead-letter work.
            code, message, retryable = "UNEXPECTED_ERROR", f"{type(error).__name__}: {error}", True
            self.log.error("stage raised an unexpected error", exc_info=error)
        job = await self._settler.fail(code, message, retryable=retryable)
        if job is None:
            self._lost()
            return
        self.deps.say(output.failed(self.job_id, self.elapsed, code, message, next_step(job)))
        self.deps.counters.record(success=False)

    async def _stopped_job(self) -> None:
        if self.stop_reason is StopReason.CANCEL:
            if await self._settler.cancelled() is None:
                self._lost()
                return
            self.deps.say(output.cancelled(self.job_id, self.elapsed))
        elif self.stop_reason is StopReason.SHUTDOWN:
            if await self._settler.release() is None:
                self._lost()
                return
            self.deps.say(output.handed_back(self.job_id, self.elapsed))
        else:
            self._lost()
            return
        self.deps.counters.record(success=False)

    def _lost(self) -> None:
        self.log.warning("lease lost after %.1fs; leaving the job to its new owner", self.elapsed)
        self.deps.say(output.lease_lost(self.job_id, self.elapsed))
        self.deps.counters.record(success=False)
