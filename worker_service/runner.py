"""The worker's claim loop, its running jobs and its graceful stop.

A `Worker` claims in batches of at most (concurrency - running) jobs, never more than --limit
allows, and runs each claimed job as a `JobRun`:

    claimed -> validating_input -> pipeline_running -> <each stage> -> Complete (succeeded)

Stages run in a thread of their own, so the event loop (and with it the heartbeat stream that
keeps the job's lease alive) never blocks on ffmpeg, S3 or an LLM. What the queue service
answers to a heartbeat stops a job: CANCEL -> the stages are told to stop and the job is failed,
which the service records as CANCELLED; LEASE_LOST -> the job belongs to someone else now, so
this worker drops it without another call. A stage thread that ignores its stop request is
abandoned (threads cannot be killed); whatever it does later is fenced off by its stale lease.

Complete and Fail are retried while the queue service is unreachable, for as long as the lease
holds: a queue service restart in the middle of a job costs nothing but a short wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from jobqueue.rpc import RETRYABLE_CODES
from jobqueue.v1 import job_pb2
from jobqueue.v1 import queue_service_pb2 as queue_pb
from worker_service import output
from worker_service.client import QueueClient, describe
from worker_service.config import WorkerConfig
from worker_service.heartbeats import Beating, HeartbeatStream
from worker_service.pipeline.base import JobStopped, Pipeline, StageContext, StageError
from worker_service.providers.grpc_sink import GrpcAdvertSink

log = logging.getLogger(__name__)

Status = job_pb2.JobStatus

# Backoff between attempts of a Complete/Fail/Claim while the queue service is unreachable.
RETRY_INITIAL_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0
# The shortest pause between two empty claims of an idle worker.
MIN_IDLE_SECONDS = 0.1
# A claim that failed inside the service (INTERNAL, UNKNOWN) is tried again like an unreachable
# one: the next claim is a new statement, and a worker that exits on a passing server error
# (a migration applied under load, say) would take its running jobs down with it.
CLAIM_RETRYABLE_CODES = RETRYABLE_CODES | {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Codes that say a Complete/Fail changed nothing because the job is not ours (any more).
NOT_OURS_CODES = frozenset(
    {grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
)


def validate_input(job_input: Mapping[str, Any]) -> str | None:
    """What is wrong with a job's input, or None. A bad input is permanent: it fails at once."""
    source_type = job_input.get("source_type")
    if source_type == "s3":
        key = job_input.get("s3_key")
        return None if isinstance(key, str) and key.strip() else "source_type s3 needs an s3_key"
    if source_type == "local":
        path = job_input.get("path")
        return None if isinstance(path, str) and path.strip() else "source_type local needs a path"
    return f"source_type must be 's3' or 'local', got {source_type!r}"


def json_safe(value: Mapping[str, Any]) -> dict[str, Any]:
    """The job output as plain JSON (paths and the like become strings) for a protobuf Struct.

    NUL characters (which a transcript or a tool's output can carry) become U+FFFD: PostgreSQL's
    jsonb refuses them, and a refused output would leave finished work to be run again.
    """
    text = json.dumps(dict(value), default=str).replace("\\u0000", "\\ufffd")
    result: dict[str, Any] = json.loads(text)
    return result


@dataclass
class Counters:
    processed: int = 0
    succeeded: int = 0
    failed: int = 0


class JobLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with job_id, attempt and worker_id, so one job's story can be grepped."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        prefix = (
            f"job_id={extra['job_id']} attempt={extra['attempt']} worker_id={extra['worker_id']}"
        )
        return f"{prefix}: {msg}", kwargs


class _Stopped:
    """The pipeline did not finish: the job was cancelled, lost, or is being handed back."""


STOPPED = _Stopped()


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        client: QueueClient,
        pipeline: Pipeline,
        say: Callable[[str], None],
    ) -> None:
        self.config = config
        self.client = client
        self.pipeline = pipeline
        self.say = say
        self.counters = Counters()
        self.heartbeats = HeartbeatStream(
            client, config.heartbeat_interval_seconds, config.worker_id
        )
        self.advert_sink: GrpcAdvertSink | None = None
        # Set on the first SIGTERM/SIGINT: stop claiming, let running jobs finish within the grace.
        self.stopping = asyncio.Event()
        # Set on a second signal: hand running jobs back now.
        self.hurry = asyncio.Event()
        # Set when the shutdown is out of time: Complete/Fail stop retrying.
        self.give_up = asyncio.Event()
        self._stop_requested_at: float | None = None
        # Why the worker stopped on its own (a refused claim), for the exit status.
        self.fatal: str | None = None
        self._runs: dict[asyncio.Task[None], JobRun] = {}

    def request_stop(self) -> None:
        if self.stopping.is_set():
            log.warning(
                "worker_id=%s second stop signal: handing back running jobs now",
                self.config.worker_id,
            )
            self.hurry.set()
            return
        log.info(
            "worker_id=%s stop requested: no new claims; %d job(s) running",
            self.config.worker_id,
            len(self._runs),
        )
        self._stop_requested_at = time.monotonic()
        self.stopping.set()

    async def run(self) -> None:
        # Stages persist through AdvertService from their own thread, on a blocking channel of
        # their own; the lease they pass fences off a stage that outlives its job's ownership.
        self.advert_sink = GrpcAdvertSink(
            self.config.queue_addr, self.config.auth_token, self.config.rpc_timeout_seconds * 3
        )
        self.heartbeats.start()
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            await self.heartbeats.stop()
            self.advert_sink.close()

    async def _claim_loop(self) -> None:
        config = self.config
        claimed = 0
        delay = RETRY_INITIAL_SECONDS
        while not self.stopping.is_set():
            allowed = config.limit - claimed if config.limit else None
            if allowed == 0:
                return
            free = config.concurrency - len(self._runs)
            if free <= 0:
                await _first(self.stopping.wait(), *self._runs)
                continue
            want = free if allowed is None else min(free, allowed)
            wait = 0.0 if config.once else config.poll_interval_seconds
            # A stop signal cancels a waiting Claim, so that SIGTERM is honoured at once rather than
            # after the poll interval. (If the cancel lands inside the claim statement itself, the
            # jobs it took are released by the heartbeat timeout: delayed, never lost.)
            claim = asyncio.ensure_future(self.client.claim(config.worker_id, want, wait))
            await _first(claim, self.stopping.wait())
            if not claim.done():
                claim.cancel()
                await asyncio.gather(claim, return_exceptions=True)
                return
            try:
                jobs = claim.result()
            except grpc.aio.AioRpcError as error:
                if error.code() not in CLAIM_RETRYABLE_CODES:
                    # Waiting cannot fix a refused token or a rejected request: stop as on SIGTERM
                    # (running jobs finish or are handed back) and exit non-zero.
                    self.fatal = describe(error)
                    log.error(
                        "worker_id=%s claim refused (%s); stopping", config.worker_id, self.fatal
                    )
                    self.request_stop()
                    return
                log.warning(
                    "worker_id=%s claim failed (%s); retrying in %.1fs",
                    config.worker_id,
                    describe(error),
                    delay,
                )
                await _first(self.stopping.wait(), within=delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            delay = RETRY_INITIAL_SECONDS
            claimed += len(jobs)
            for job in jobs:
                self._start(job)
            if config.once and not jobs:
                return  # --once: everything that was runnable has been taken.
            if not jobs and wait < MIN_IDLE_SECONDS:
                # --poll-interval 0 must not turn an idle worker into a busy loop of claims.
                await _first(self.stopping.wait(), within=MIN_IDLE_SECONDS)

    def _start(self, job: job_pb2.Job) -> None:
        run = JobRun(self, job)
        task = asyncio.create_task(run.run(), name=f"job-{job.id}")
        self._runs[task] = run
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        run = self._runs.pop(task, None)
        if not task.cancelled() and (error := task.exception()) is not None and run is not None:
            run.log.error("job run crashed: %r", error, exc_info=error)

    async def _drain(self) -> None:
        """Wait for running jobs; once stopping, give them the grace period, then hand them back."""
        while self._runs:
            if not self.stopping.is_set():
                await _first(self.stopping.wait(), *self._runs)
                continue
            assert self._stop_requested_at is not None
            remaining = (
                self._stop_requested_at + self.config.shutdown_grace_seconds - time.monotonic()
            )
            if remaining > 0 and not self.hurry.is_set():
                await _first(self.hurry.wait(), *self._runs, within=remaining)
                continue
            for run in list(self._runs.values()):
                run.stop("shutdown")
            settle_time = self.config.rpc_timeout_seconds + 1.0
            await _first(asyncio.gather(*self._runs, return_exceptions=True), within=settle_time)
            if self._runs:
                log.warning(
                    "worker_id=%s %d job(s) could not be handed back; the heartbeat "
                    "timeout will release them",
                    self.config.worker_id,
                    len(self._runs),
                )
                self.give_up.set()
                await _first(
                    asyncio.gather(*self._runs, return_exceptions=True), within=settle_time
                )
            return


async def _first(*awaitables: Awaitable[Any], within: float | None = None) -> None:
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


class JobRun:
    """One claimed job, from its claim to its Complete or Fail (or the loss of its lease)."""

    def __init__(self, worker: Worker, job: job_pb2.Job) -> None:
        self.worker = worker
        self.job = job
        self.job_id = job.id
        self.lease = job.lease
        self.input: dict[str, Any] = json_format.MessageToDict(job.input)
        self.log = JobLog(
            log, {"job_id": job.id, "attempt": job.attempts, "worker_id": worker.config.worker_id}
        )
        # "cancel", "lease_lost" or "shutdown" once the job must stop; lease_lost overrides.
        self.stop_reason: str | None = None
        self.stop_event = threading.Event()
        self._stopped = asyncio.Event()
        self._started = time.monotonic()
        self._entry: Beating | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def on_heartbeat_answer(self, action: int) -> None:
        if action == queue_pb.HEARTBEAT_ACTION_LEASE_LOST:
            self.stop("lease_lost")
        elif action == queue_pb.HEARTBEAT_ACTION_CANCEL:
            self.stop("cancel")

    def stop(self, reason: str) -> None:
        if self.stop_reason is None or reason == "lease_lost":
            if self.stop_reason != reason:
                self.log.info("stopping: %s", reason)
            self.stop_reason = reason
        self.stop_event.set()
        self._stopped.set()

    async def run(self) -> None:
        worker = self.worker
        worker.say(
            output.processing(
                self.job_id,
                self.job.attempts,
                self.job.max_attempts,
                output.source_label(self.input),
            )
        )
        self.log.info("claimed (lease %d) input=%s", self.lease, output.source_label(self.input))
        self._entry = worker.heartbeats.register(self.job_id, self.lease, self.on_heartbeat_answer)
        try:
            await self._run()
        finally:
            worker.heartbeats.unregister(self._entry)

    async def _run(self) -> None:
        assert self._entry is not None
        heartbeats = self.worker.heartbeats
        heartbeats.beat_now(self._entry, stage="validating_input", progress=0.0)
        problem = validate_input(self.input)
        if problem is not None:
            await self._fail("INVALID_INPUT", problem, retryable=False)
            return
        heartbeats.beat_now(self._entry, stage="pipeline_running", progress=0.0)
        workdir = Path(tempfile.mkdtemp(prefix=f"job-{output.short_id(self.job_id)}-"))
        try:
            result = await self._run_pipeline(workdir)
        finally:
            # An abandoned stage thread may still be writing here; it is stopping anyway.
            shutil.rmtree(workdir, ignore_errors=True)
        if isinstance(result, _Stopped):
            await self._stopped_job()
        elif isinstance(result, BaseException):
            await self._failed(result)
        else:
            await self._complete(result)

    async def _run_pipeline(self, workdir: Path) -> dict[str, Any] | BaseException | _Stopped:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[BaseException | None] = loop.create_future()
        assert self._entry is not None and self.worker.advert_sink is not None
        entry = self._entry
        stages = list(self.worker.pipeline.stages)
        ctx = StageContext(
            job_id=self.job_id,
            lease=self.lease,
            input=dict(self.input),
            workdir=workdir,
            advert_sink=self.worker.advert_sink,
            stop_event=self.stop_event,
        )
        timings: dict[str, float] = {}

        def report(index: int, fraction: float) -> None:
            # The job's progress over all stages; the next beat carries it.
            entry.progress = (index + fraction) / len(stages)

        def body() -> None:
            for index, stage in enumerate(stages):
                ctx.check_stopped()
                ctx.report_progress = functools.partial(report, index)
                loop.call_soon_threadsafe(
                    self.worker.heartbeats.beat_now, entry, stage.name, index / len(stages)
                )
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
            target=thread_main, name=f"job-{output.short_id(self.job_id)}", daemon=True
        )
        thread.start()
        await _first(finished, self._stopped.wait())
        if self.stop_reason is not None:
            if not finished.done():
                self.log.info("not waiting for the stage thread; it was told to stop")
            return STOPPED
        error = finished.result()
        if isinstance(error, JobStopped):
            # A stage learnt first that the lease is gone (e.g. StoreAdvert answered ABORTED).
            self.stop("lease_lost")
            return STOPPED
        if error is not None:
            return error
        result = json_safe(ctx.output)
        result["stage_timings"] = timings
        return result

    async def _complete(self, result: dict[str, Any]) -> None:
        job = await self._settle(
            "Complete",
            lambda: self.worker.client.complete(self.job_id, self.lease, result),
            landed=lambda job: job.status == Status.JOB_STATUS_SUCCEEDED,
        )
        if job is None:
            self._lost()
            return
        self.log.info("succeeded in %.1fs", self.elapsed)
        self.worker.say(output.succeeded(self.job_id, self.elapsed, result.get("ad_id")))
        self._count(success=True)

    async def _failed(self, error: BaseException) -> None:
        if isinstance(error, StageError):
            code, message, retryable = error.code, error.message, error.retryable
            self.log.warning("stage failed: %s: %s (retryable=%s)", code, message, retryable)
        else:
            # Unclassified: assume transient, so that a flaky dependency does not dead-letter work.
            code, message, retryable = "UNEXPECTED_ERROR", f"{type(error).__name__}: {error}", True
            self.log.error("stage raised an unexpected error", exc_info=error)
        await self._fail(code, message, retryable=retryable)

    async def _stopped_job(self) -> None:
        if self.stop_reason == "cancel":
            job = await self._settle(
                "Fail",
                lambda: self.worker.client.fail(
                    self.job_id,
                    self.lease,
                    code="CANCELLED",
                    message="cancelled by an operator while running",
                    retryable=False,
                ),
                landed=lambda job: job.status == Status.JOB_STATUS_CANCELLED,
            )
            if job is None:
                self._lost()
                return
            self.worker.say(output.cancelled(self.job_id, self.elapsed))
            self._count(success=False)
        elif self.stop_reason == "shutdown":
            # Release, not Fail: the job is QUEUED again at once for another worker, and the
            # attempt it did not finish is not counted against it.
            job = await self._settle(
                "Release",
                lambda: self.worker.client.release(
                    self.job_id, self.lease, "the worker shut down before the job finished"
                ),
                landed=lambda job: (
                    job.stage == "released" or job.status == Status.JOB_STATUS_CANCELLED
                ),
            )
            if job is None:
                self._lost()
                return
            self.worker.say(output.handed_back(self.job_id, self.elapsed))
            self._count(success=False)
        else:
            self._lost()

    async def _fail(self, code: str, message: str, *, retryable: bool) -> None:
        job = await self._settle(
            "Fail",
            lambda: self.worker.client.fail(
                self.job_id, self.lease, code=code, message=message, retryable=retryable
            ),
            landed=lambda job: job.error_code == code,
        )
        if job is None:
            self._lost()
            return
        self.worker.say(output.failed(self.job_id, self.elapsed, code, message, _next_step(job)))
        self._count(success=False)

    def _lost(self) -> None:
        self.log.warning("lease lost after %.1fs; leaving the job to its new owner", self.elapsed)
        self.worker.say(output.lease_lost(self.job_id, self.elapsed))
        self._count(success=False)

    def _count(self, *, success: bool) -> None:
        counters = self.worker.counters
        counters.processed += 1
        if success:
            counters.succeeded += 1
        else:
            counters.failed += 1

    async def _settle(
        self,
        what: str,
        call: Callable[[], Awaitable[job_pb2.Job]],
        *,
        landed: Callable[[job_pb2.Job], bool],
    ) -> job_pb2.Job | None:
        """Make a Complete/Fail/Release call stick: retried while the service is unreachable.

        Returns the job after the call, or None when the job is not ours any more. The lease makes
        a repeat harmless. A repeat refused after an earlier attempt may have landed is settled by
        reading the job back: same lease, and in the state this call makes (`landed`). "Same
        lease, not RUNNING" alone is not enough: the stale sweep also ends a job without taking
        a new lease, and its outcome is not ours to report.
        """
        delay = RETRY_INITIAL_SECONDS
        uncertain = False
        while True:
            if self.stop_reason == "lease_lost" or self.worker.give_up.is_set():
                return None
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code in NOT_OURS_CODES:
                    return await self._landed_earlier(landed) if uncertain else None
                if code not in RETRYABLE_CODES:
                    self.log.error(
                        "%s refused (%s); the heartbeat timeout will release the job",
                        what,
                        describe(error),
                    )
                    return None
                uncertain = True
                self.log.warning("%s failed (%s); retrying in %.1fs", what, describe(error), delay)
            await _first(self.worker.give_up.wait(), within=delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _landed_earlier(self, landed: Callable[[job_pb2.Job], bool]) -> job_pb2.Job | None:
        try:
            job = await self.worker.client.get_job(self.job_id)
        except grpc.aio.AioRpcError:
            return None
        if job.lease == self.lease and job.status != Status.JOB_STATUS_RUNNING and landed(job):
            return job
        return None


def _next_step(job: job_pb2.Job) -> str:
    """What the queue service decided after a Fail, for the output line."""
    if job.status == Status.JOB_STATUS_RETRY:
        wait = job.run_after.ToDatetime() - job.updated_at.ToDatetime()
        return f"will retry in {max(0.0, wait.total_seconds()):.1f}s"
    if job.status == Status.JOB_STATUS_CANCELLED:
        return "cancelled"
    if job.attempts >= job.max_attempts:
        return f"will not retry: {job.attempts}/{job.max_attempts} attempts used"
    return "will not retry: permanent error"
