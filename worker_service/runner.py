"""The worker's claim loop and its graceful stop.

A `Worker` claims in batches of at most (concurrency - running) jobs, never more than --limit
allows, and runs each claimed job as a `JobRun` (job_run.py), which beats on the one heartbeat
stream the worker keeps open for all of them and settles its job itself (settle.py).

On the first SIGTERM/SIGINT it stops claiming and gives running jobs the shutdown grace to
finish; then (or at once, on a second signal) it stops them with StopReason.SHUTDOWN, which
hands them back to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from jobqueue import rpc
from jobqueue.v1 import job_pb2
from worker_service.client import QueueCalls
from worker_service.config import WorkerConfig
from worker_service.heartbeats import HeartbeatStream
from worker_service.job_run import Counters, JobRun, JobRunDeps
from worker_service.pipeline.base import Pipeline
from worker_service.stop_reason import StopReason
from worker_service.waiting import Backoff, first_of

log = logging.getLogger(__name__)

# The shortest pause between two empty claims of an idle worker.
MIN_IDLE_SECONDS = 0.1
# A claim that failed inside the service (INTERNAL, UNKNOWN) is tried again like an unreachable
# one: the next claim is a new statement, and a worker that exits on a passing server error
# (a migration applied under load, say) would take its running jobs down with it.
CLAIM_RETRYABLE_CODES = rpc.RETRYABLE_CODES | {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        client: QueueCalls,
        pipeline: Pipeline,
        say: Callable[[str], None],
    ) -> None:
        self.config = config
        self.client = client
        self.counters = Counters()
        self.heartbeats = HeartbeatStream(
            client, config.heartbeat_interval_seconds, config.worker_id
        )
        # Set on the first SIGTERM/SIGINT: stop claiming, let running jobs finish within the grace.
        self.stopping = asyncio.Event()
        # Set on a second signal: hand running jobs back now.
        self.hurry = asyncio.Event()
        # Set when the shutdown is out of time: Complete/Fail stop retrying.
        self.give_up = asyncio.Event()
        self._stop_requested_at = 0.0
        # Why the worker stopped on its own (a refused claim), for the exit status.
        self.fatal: str | None = None
        self._deps = JobRunDeps(
            client=client,
            heartbeats=self.heartbeats,
            pipeline=pipeline,
            worker_id=config.worker_id,
            say=say,
            counters=self.counters,
            give_up=self.give_up,
        )
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
        self.heartbeats.start()
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            await self.heartbeats.stop()

    async def _claim_loop(self) -> None:
        config = self.config
        claimed = 0
        backoff = Backoff()
        while not self.stopping.is_set():
            allowed = config.limit - claimed if config.limit else None
            if allowed == 0:
                return
            free = config.concurrency - len(self._runs)
            if free <= 0:
                await first_of(self.stopping.wait(), *self._runs)
                continue
            want = free if allowed is None else min(free, allowed)
            wait = 0.0 if config.once else config.poll_interval_seconds
            # A stop signal cancels a waiting Claim, so that SIGTERM is honoured at once rather than
            # after the poll interval. (If the cancel lands inside the claim statement itself, the
            # jobs it took are released by the heartbeat timeout: delayed, never lost.)
            claim = asyncio.ensure_future(self.client.claim(config.worker_id, want, wait))
            await first_of(claim, self.stopping.wait())
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
                    self.fatal = rpc.describe(error)
                    log.error(
                        "worker_id=%s claim refused (%s); stopping", config.worker_id, self.fatal
                    )
                    self.request_stop()
                    return
                log.warning(
                    "worker_id=%s claim failed (%s); retrying in %.1fs",
                    config.worker_id,
                    rpc.describe(error),
                    backoff.delay,
                )
                await first_of(self.stopping.wait(), within=backoff.delay)
                backoff.grow()
                continue
            backoff.reset()
            claimed += len(jobs)
            for job in jobs:
                self._start(job)
            if config.once and not jobs:
                return  # --once: everything that was runnable has been taken.
            if not jobs and wait < MIN_IDLE_SECONDS:
                # --poll-interval 0 must not turn an idle worker into a busy loop of claims.
                await first_of(self.stopping.wait(), within=MIN_IDLE_SECONDS)

    def _start(self, job: job_pb2.Job) -> None:
        run = JobRun(job, self._deps)
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
                await first_of(self.stopping.wait(), *self._runs)
                continue
            remaining = (
                self._stop_requested_at + self.config.shutdown_grace_seconds - time.monotonic()
            )
            if remaining > 0 and not self.hurry.is_set():
                await first_of(self.hurry.wait(), *self._runs, within=remaining)
                continue
            for run in list(self._runs.values()):
                run.stop(StopReason.SHUTDOWN)
            settle_time = self.config.rpc_timeout_seconds + 1.0
            await first_of(asyncio.gather(*self._runs, return_exceptions=True), within=settle_time)
            if self._runs:
                log.warning(
                    "worker_id=%s %d job(s) could not be handed back; the heartbeat "
                    "timeout will release them",
                    self.config.worker_id,
                    len(self._runs),
                )
                self.give_up.set()
                await first_of(
                    asyncio.gather(*self._runs, return_exceptions=True), within=settle_time
                )
            return
