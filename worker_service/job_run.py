"""One claimed job's life, from its claim to its settlement (or the loss of its lease):

    claimed (queued) -> validating_input -> pipeline_running -> <each stage> -> Complete (succeeded)

A job beats on the worker's heartbeat stream from its claim to its end, including while it is
queued in the stage pool (claimed ahead, waiting for a thread), and what the queue service
answers stops it: CANCEL -> the stages are told to stop and the job is failed, which the service
records as CANCELLED; LEASE_LOST -> the job belongs to someone else now, so this worker drops it
without another call. So does silence: a job none of whose beats was acknowledged for
HEARTBEAT_TIMEOUT_SECONDS (FENCED) may have been released already, so its stages are told to
stop and no call is made for it, its Complete included. The worker's shutdown stops it too, and
the job is handed back (Release); a job that never started is handed back without a word and
without being counted.

The hot path costs no task, thread, folder or log line of its own: `start` queues the job in the
worker's stage pool (stage_thread.py), whose thread runs `_execute` (the checklist's line, the
input check, the stages, the Complete entry built), and the outcome comes back to `_executed` on
the event loop, which hands a success to the batched Complete (settle.py). Only the rarer paths
(a stop, a retryable failure, a hand-back) run as tasks.

A `JobRun` is given everything it uses (`JobRunDeps`); it knows nothing of the claim loop, and
nothing of what a job's input means: the pipeline checks the input and runs the stages.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from jobqueue import rpc
from jobqueue.v1 import job_pb2
from jobqueue.v1 import queue_service_pb2 as queue_pb
from worker_service import output
from worker_service.client import QueueCalls
from worker_service.heartbeats import Beating, HeartbeatStream
from worker_service.job_log import JobLog
from worker_service.pipeline.base import Pipeline, StageContext, StopSignal
from worker_service.pipeline.errors import JobStopped, StageError
from worker_service.settle import (
    CANCELLED_CODE,
    CANCELLED_MESSAGE,
    Batcher,
    Settled,
    Settlement,
    Settler,
    complete_request,
    next_step,
)
from worker_service.stage_thread import Outcome, StagePool, StagesDone, Ticket, run_stages
from worker_service.stop_reason import StopReason

log = logging.getLogger(__name__)

Status = job_pb2.JobStatus

# Reasons after which no call can succeed for the job: the first of them sticks.
FINAL_REASONS = frozenset({StopReason.LEASE_LOST, StopReason.FENCED})


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
    # The threads that run stages, and the batched Completes and Fails: the worker's, shared by
    # its runs. A run started on its own (`JobRun.run`) makes its own when they are missing.
    stages: StagePool | None = None
    completes: Batcher | None = None
    failures: Batcher | None = None
    # True while this worker's jobs are short (the worker measures them): a stage change then
    # rides on the job's next regular beat instead of a beat of its own, so that a job that ends
    # within one heartbeat interval costs no beat. Long jobs report each stage at once.
    short_jobs: Callable[[], bool] = lambda: False


class State(enum.Enum):
    QUEUED = "queued"  # in the stage pool: waiting for a thread, or running there
    SETTLING = "settling"  # its outcome is on its way to the queue service
    DONE = "done"


def _nothing(_run: JobRun) -> None:
    pass


class JobRun:
    def __init__(self, job: job_pb2.Job, deps: JobRunDeps) -> None:
        self.job = job
        self.job_id = job.id
        self.lease = job.lease
        self.deps = deps
        self.state = State.QUEUED
        self.stop_reason: StopReason | None = None
        # The stage thread's view of a stop request.
        self.stop_event = StopSignal()
        # Whether it started running, and how long it ran (from its start to its stages'
        # outcome; None when it was stopped), for the worker's count of places and its pace.
        self.ran = False
        self.execution_seconds: float | None = None
        # Told when the run leaves the stage pool (it ran, or it was stopped), and when it is
        # over. Set by the worker.
        self.on_leave: Callable[[JobRun], None] = _nothing
        self.on_finished: Callable[[JobRun], None] = _nothing
        self._began = time.monotonic()
        self._entry: Beating | None = None
        self._ticket: Ticket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # For a success: the ad_id its line names, and its Complete entry.
        self._completion: tuple[object, queue_pb.CompleteRequest] | None = None
        self._log: JobLog | None = None
        self._finished: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        # How long its beats went unacknowledged, when that stopped it (FENCED).
        self._silent = 0.0

    @property
    def log(self) -> JobLog:
        if self._log is None:
            self._log = JobLog(log, self.job_id, self.job.attempts, self.deps.worker_id)
        return self._log

    @property
    def elapsed(self) -> float:
        """Seconds since it started running (since its claim, if it never did)."""
        return time.monotonic() - self._began

    def lease_lost(self) -> bool:
        """Whether no call may be made for the job any more (its lease is gone, or may be)."""
        return self.stop_reason in FINAL_REASONS

    # -- the worker's side (event loop) ------------------------------------------------------

    def start(self) -> None:
        """The job is claimed: it beats from now on, and waits in the stage pool for a thread."""
        deps = self.deps
        assert deps.stages is not None
        self._loop = asyncio.get_running_loop()
        self._entry = deps.heartbeats.register(
            self.job_id, self.lease, self.on_heartbeat_answer, self.on_fenced
        )
        self._ticket = deps.stages.submit(self._execute, self._executed)

    def on_heartbeat_answer(self, action: int) -> None:
        if action == queue_pb.HEARTBEAT_ACTION_LEASE_LOST:
            self.stop(StopReason.LEASE_LOST)
        elif action == queue_pb.HEARTBEAT_ACTION_CANCEL:
            self.stop(StopReason.CANCEL)

    def on_fenced(self, silent: float) -> None:
        if self.state is State.DONE:
            return
        self._silent = silent
        self.log.warning(
            "no heartbeat acknowledged for %.1fs; stopping the job and leaving it to the queue "
            "service",
            silent,
        )
        self.stop(StopReason.FENCED)

    def stop(self, reason: StopReason) -> None:
        """Stop the job (its stages are told, and not waited for) and settle it as `reason`
        says. A job already settling keeps settling; a lost lease (or a fence) ends its
        retries."""
        if self.stop_reason is None or (
            reason in FINAL_REASONS and self.stop_reason not in FINAL_REASONS
        ):
            if self.stop_reason is not reason:
                self.log.info("stopping: %s", reason.value)
            self.stop_reason = reason
        self.stop_event.set()
        if self.state is State.QUEUED:
            self._leave_pool()
            self._spawn(self._stopped())

    def hand_back_if_unstarted(self) -> bool:
        """At a shutdown: a job that has not started is taken out of the pool and handed back
        at once, without a line and without being counted. False if it has started."""
        if self.state is not State.QUEUED or self.ran or not self._withdraw():
            return False
        self.stop_reason = StopReason.SHUTDOWN
        self.stop_event.set()
        self._leave()
        self._spawn(self._stopped())
        return True

    async def run(self) -> None:
        """The whole life of a job on its own, for a caller without a worker: start it and wait
        until it is settled. Makes the pool and batches it is not given."""
        deps = self.deps
        made: list[Any] = []
        if deps.stages is None:
            made.append(StagePool(1))
            deps = replace(deps, stages=made[-1])
        if deps.completes is None or deps.failures is None:
            completes = Batcher.completes(deps.client, deps.give_up, deps.worker_id)
            failures = Batcher.failures(deps.client, deps.give_up, deps.worker_id)
            for batcher in (completes, failures):
                batcher.start()
                made.append(batcher)
            deps = replace(deps, completes=completes, failures=failures)
        self.deps = deps
        self._finished = asyncio.get_running_loop().create_future()
        try:
            self.start()
            await self._finished
        finally:
            for thing in made:
                if isinstance(thing, Batcher):
                    await thing.stop()
                else:
                    thing.close()

    # -- in a pool thread ----------------------------------------------------------------------

    def _execute(self) -> Outcome:
        """The job runs: the checklist's line, the input check, the stages, and for a success the
        Complete entry, built here so that the event loop only sends it."""
        if self.stop_event.is_set():
            return JobStopped(self.job_id)  # stopped as it was taken: it never starts
        began = self._began = time.monotonic()
        self.ran = True
        deps = self.deps
        try:
            job_input = rpc.struct_to_dict(self.job.input)
            label = output.source_label(job_input)
            attempt, attempts = self.job.attempts, self.job.max_attempts
            deps.say(output.processing(self.job_id, attempt, attempts, label))
            if log.isEnabledFor(logging.DEBUG):
                self.log.debug("running (lease %d) input=%s", self.lease, label)
            started = self._stage_quietly if deps.short_jobs() else self._stage_at_once
            started("validating_input", 0.0)
            deps.pipeline.check_input(job_input)
            started("pipeline_running", 0.0)
            ctx = StageContext(
                job_id=self.job_id, lease=self.lease, input=job_input, stop_event=self.stop_event
            )
            outcome = run_stages(deps.pipeline.stages, ctx, started, self._progressed)
            if isinstance(outcome, StagesDone):
                produced, timings = outcome.output, outcome.timings
                request = complete_request(self.job_id, self.lease, produced, timings)
                self._completion = (produced.get("ad_id"), request)
        except Exception as error:  # a StageError from the input check; anything else is a bug
            outcome = error
        self.execution_seconds = time.monotonic() - began
        return outcome

    def _stage_at_once(self, stage: str, progress: float) -> None:
        """A stage starts: its beat goes out now (jobs are long, their stages worth seeing)."""
        assert self._loop is not None and self._entry is not None
        self._loop.call_soon_threadsafe(self.deps.heartbeats.beat_now, self._entry, stage, progress)

    def _stage_quietly(self, stage: str, progress: float) -> None:
        """A stage starts: the job's next regular beat says so (jobs are short)."""
        entry = self._entry
        assert entry is not None
        entry.stage, entry.progress = stage, progress

    def _progressed(self, progress: float) -> None:
        assert self._entry is not None
        self._entry.progress = progress

    # -- from the outcome to the settlement (event loop) ---------------------------------------

    def _executed(self, outcome: Outcome) -> None:
        """The job's outcome, handed back by its thread (unless it was stopped first)."""
        if self.state is not State.QUEUED:
            return
        self._leave()
        if isinstance(outcome, StagesDone):
            assert self._completion is not None
            ad_id, request = self._completion
            completes = self.deps.completes
            assert completes is not None
            completes.add(Settlement(request, self, functools.partial(self._completed, ad_id)))
        elif isinstance(outcome, JobStopped):
            # A stage learnt first that the lease is gone (e.g. StoreAdvert answered ABORTED).
            self.stop(StopReason.LEASE_LOST)
            self._spawn(self._stopped())
        else:
            self._failed(outcome)

    def _withdraw(self) -> bool:
        stages, ticket = self.deps.stages, self._ticket
        return stages is not None and ticket is not None and stages.withdraw(ticket)

    def _leave_pool(self) -> None:
        """Out of the pool at a stop: withdrawn if it never started, else abandoned to its
        thread (which the pool replaces, should its stages ignore the stop)."""
        if not self._withdraw():
            self.ran = True
            stages, ticket = self.deps.stages, self._ticket
            if stages is not None and ticket is not None:
                stages.abandon(ticket)
        self.execution_seconds = None
        self._leave()

    def _leave(self) -> None:
        self.state = State.SETTLING
        self.on_leave(self)

    def _completed(self, ad_id: object, job: Settled | None) -> None:
        if job is not None and log.isEnabledFor(logging.DEBUG):
            self.log.debug("succeeded in %.3fs", self.elapsed)
        self._end(job, lambda _: output.succeeded(self.job_id, self.elapsed, ad_id), success=True)

    def _end(
        self, job: Settled | None, line: Callable[[Settled], str], *, success: bool = False
    ) -> None:
        """The job is settled (`job`: as the call left it): its line is said and it is counted;
        or it is not ours any more (None)."""
        if job is None:
            self._lost()
            return
        self.deps.say(line(job))
        self.deps.counters.record(success=success)
        self._finish()

    def _failed(self, error: BaseException) -> None:
        if isinstance(error, StageError):
            code, message, retryable = error.code, error.message, error.retryable
            self.log.warning("stage failed: %s: %s (retryable=%s)", code, message, retryable)
        else:
            # Unclassified: assume transient, so that a flaky dependency does not dead-letter work.
            code, message, retryable = "UNEXPECTED_ERROR", f"{type(error).__name__}: {error}", True
            self.log.error("stage raised an unexpected error", exc_info=error)
        said = functools.partial(self._said_failed, code, message)
        if retryable and self.job.attempts < self.job.max_attempts:
            # Its line says when it will be retried, which only a Fail of its own answers (a
            # batch entry's answer carries the status alone).
            self._spawn(
                self._settle_alone(self._settler().fail(code, message, retryable=True), said)
            )
        else:
            self._fail_in_batch(code, message, retryable, said)

    def _said_failed(self, code: str, message: str, job: Settled | None) -> None:
        self._end(
            job,
            lambda job: output.failed(self.job_id, self.elapsed, code, message, self._next(job)),
        )

    def _next(self, job: Settled) -> str:
        """What happens next, from the job after its Fail (a batch's answer: its status, with
        the attempts of this claim)."""
        if isinstance(job, queue_pb.EntryResult):
            attempts = self.job.attempts
            job = job_pb2.Job(
                status=job.status, attempts=attempts, max_attempts=self.job.max_attempts
            )
        return next_step(job)

    def _fail_in_batch(
        self, code: str, message: str, retryable: bool, done: Callable[[Settled | None], None]
    ) -> None:
        request = queue_pb.FailRequest(
            job_id=self.job_id, lease=self.lease, error_code=code, message=message
        )
        request.retryable = retryable
        failures = self.deps.failures
        assert failures is not None
        failures.add(Settlement(request, self, done))

    async def _stopped(self) -> None:
        reason = self.stop_reason
        if reason is StopReason.CANCEL:
            self._fail_in_batch(CANCELLED_CODE, CANCELLED_MESSAGE, False, self._said_cancelled)
        elif reason is StopReason.SHUTDOWN and not self.ran:
            await self._hand_back_unstarted()
        elif reason is StopReason.SHUTDOWN:
            await self._settle_alone(self._settler().release(), self._said_handed_back)
        elif self.state is not State.DONE:
            self._lost()

    def _said_cancelled(self, job: Settled | None) -> None:
        self._end(job, lambda _: output.cancelled(self.job_id, self.elapsed))

    def _said_handed_back(self, job: Settled | None) -> None:
        self._end(job, lambda _: output.handed_back(self.job_id, self.elapsed))

    async def _hand_back_unstarted(self) -> None:
        """A job claimed ahead that never started: QUEUED again at once for any worker, with
        no line and not counted (this worker never ran it)."""
        job = await self._settler().release()
        if job is None:
            self.log.warning("could not hand back an unstarted job; the heartbeat timeout will")
        self._finish()

    async def _settle_alone(
        self,
        settling: Awaitable[job_pb2.Job | None],
        done: Callable[[Settled | None], None],
    ) -> None:
        done(await settling)

    def _settler(self) -> Settler:
        return Settler(
            self.deps.client,
            self.job_id,
            self.lease,
            self.log,
            lease_lost=self.lease_lost,
            give_up=self.deps.give_up,
        )

    def _lost(self) -> None:
        if self.stop_reason is StopReason.FENCED:
            self.deps.say(output.fenced(self.job_id, self.elapsed, self._silent))
        else:
            self.log.warning(
                "lease lost after %.1fs; leaving the job to its new owner", self.elapsed
            )
            self.deps.say(output.lease_lost(self.job_id, self.elapsed))
        self.deps.counters.record(success=False)
        self._finish()

    def _finish(self) -> None:
        if self.state is State.DONE:
            return
        self.state = State.DONE
        if self._entry is not None:
            self.deps.heartbeats.unregister(self._entry)
        self.on_finished(self)
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_ended)

    def _spawned_ended(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)  # type: ignore[arg-type]
        if not task.cancelled() and (error := task.exception()) is not None:
            # A bug: the job is left to the heartbeat timeout, and the worker does not wait on it.
            self.log.error("job run crashed: %r", error, exc_info=error)
            self._finish()
