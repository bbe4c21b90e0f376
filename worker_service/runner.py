"""The worker's claim loop and its graceful stop.

A `Worker` runs at most --concurrency jobs at once: each claimed job is a `JobRun` (job_run.py)
queued in the worker's stage pool (stage_thread.py), whose --concurrency threads run them in
claim order; each beats on the one heartbeat stream the worker keeps open for all of them, and
its outcome goes out in the worker's batched Completes and Fails (settle.py). A claim is
outstanding whenever the worker has room, waiting (long-polling) for work when none is
runnable, so an idle worker starts a new job as soon as it is enqueued.

It claims what it has room for, never more than --limit allows, and when its jobs are short it
claims ahead (`Pace`): up to about PREFETCH_HORIZON_SECONDS of work beyond what it runs, at most
PREFETCH_MAX jobs, so that a thread that frees takes its next job from the pool's queue rather
than after a claim's round trip. A job claimed ahead is RUNNING under its lease and beats like a
running one, so it never times out however long it waits; long jobs are never claimed ahead,
since another worker may be free to run them now.

On the first SIGTERM/SIGINT it stops claiming, hands the jobs claimed ahead back at once (not
counted: they never started), and gives running jobs the shutdown grace to finish; then (or at
once, on a second signal) it stops them with StopReason.SHUTDOWN, which hands them back too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from jobqueue import rpc
from worker_service.client import QueueCalls
from worker_service.config import WorkerConfig
from worker_service.heartbeats import HeartbeatStream
from worker_service.job_run import Counters, JobRun, JobRunDeps, State
from worker_service.pipeline.base import Pipeline
from worker_service.settle import MAX_BATCH, Batcher
from worker_service.stage_thread import StagePool
from worker_service.stop_reason import StopReason
from worker_service.waiting import Backoff, first_of

log = logging.getLogger(__name__)

# The shortest pause between two empty claims of an idle worker.
MIN_IDLE_SECONDS = 0.1
# A claim that failed inside the service (INTERNAL, UNKNOWN) is tried again like an unreachable
# one: the next claim is a new statement, and a worker that exits on a passing server error
# (a migration applied under load, say) would take its running jobs down with it. CANCELLED is
# the server's doing too (its stop cancels what is still running when the grace runs out): the
# worker's own cancel of a claim never reaches here as an error.
CLAIM_RETRYABLE_CODES = rpc.RETRYABLE_CODES | {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}
# Claiming ahead: about this many seconds of work held beyond the running jobs...
PREFETCH_HORIZON_SECONDS = 0.1
# ... and never more than this many jobs (graphile-worker's local queue holds 500).
PREFETCH_MAX = 500


class Pace:
    """How long this worker's jobs take: an exponentially weighted mean of their run times,
    trusted once WARM_UP jobs have run. It decides how many jobs to claim ahead and whether
    jobs are short enough that their stage changes need no beats of their own."""

    WARM_UP = 20
    WEIGHT = 0.1
    # Jobs shorter than this on average are short: their stages are seen at the next beat.
    SHORT_SECONDS = 0.1

    def __init__(self) -> None:
        self.runs = 0
        self.mean_seconds = 0.0

    def record(self, seconds: float) -> None:
        self.runs += 1
        if self.runs == 1:
            self.mean_seconds = seconds
        else:
            self.mean_seconds += self.WEIGHT * (seconds - self.mean_seconds)

    def short(self) -> bool:
        return self.runs >= self.WARM_UP and self.mean_seconds < self.SHORT_SECONDS

    def ahead(self, concurrency: int) -> int:
        """How many jobs to hold beyond the `concurrency` running ones."""
        if self.runs < self.WARM_UP:
            return 0
        expected = concurrency * PREFETCH_HORIZON_SECONDS / max(self.mean_seconds, 1e-6)
        return min(PREFETCH_MAX, int(expected))


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        client: QueueCalls,
        pipeline: Pipeline,
        say: Callable[[str], None],
        flush: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.client = client
        self.counters = Counters()
        # Called when the worker goes idle or is about to wait: buffered output goes out.
        self._flush = flush
        self.heartbeats = HeartbeatStream(
            client,
            config.heartbeat_interval_seconds,
            config.worker_id,
            config.heartbeat_timeout_seconds,
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
        self.pace = Pace()
        self._stages = StagePool(config.concurrency)
        self._completes = Batcher.completes(client, self.give_up, config.worker_id)
        self._failures = Batcher.failures(client, self.give_up, config.worker_id)
        self._deps = JobRunDeps(
            client=client,
            heartbeats=self.heartbeats,
            pipeline=pipeline,
            worker_id=config.worker_id,
            say=say,
            counters=self.counters,
            give_up=self.give_up,
            stages=self._stages,
            completes=self._completes,
            failures=self._failures,
            short_jobs=self.pace.short,
        )
        # Every job this worker holds until it is settled, and how many of them are in the stage
        # pool (running, or claimed ahead and waiting for a thread).
        self._live: set[JobRun] = set()
        self._in_pool = 0
        self._claimed = 0
        # Set when there is room worth a claim (the claim loop waits on it when there is none).
        self._roomy = asyncio.Event()
        # Set while the worker holds no job at all.
        self._idle = asyncio.Event()
        self._idle.set()

    def request_stop(self) -> None:
        if self.stopping.is_set():
            log.warning(
                "worker_id=%s second stop signal: handing back running jobs now",
                self.config.worker_id,
            )
            self.hurry.set()
            return
        log.info(
            "worker_id=%s stop requested: no new claims; %d job(s) in hand",
            self.config.worker_id,
            self._in_pool,
        )
        self._stop_requested_at = time.monotonic()
        self.stopping.set()
        self._hand_back_held()

    async def run(self) -> None:
        self.heartbeats.start()
        self._completes.start()
        self._failures.start()
        try:
            await self._claim_loop()
            if self.stopping.is_set():
                self._hand_back_held()
            await self._drain()
        finally:
            await self._completes.stop()
            await self._failures.stop()
            await self.heartbeats.stop()
            self._stages.close()
            self._flush()

    # -- claiming --------------------------------------------------------------------------------

    def _room(self) -> int:
        """How many jobs to claim now: 0 until a claim is worth its round trip."""
        config = self.config
        concurrency = config.concurrency
        # Settlements still waiting to be sent, not those in flight: a batch call in flight is
        # the settling keeping up, and holding claims back until it answered would run the
        # worker one step at a time (a claim, its jobs, their settlement, the next claim).
        if self._completes.unsent + self._failures.unsent >= max(concurrency, PREFETCH_MAX):
            return 0  # the queue service is not keeping up with our settlements
        ahead = self.pace.ahead(concurrency)
        room = min(concurrency + ahead - self._in_pool, MAX_BATCH)
        # With jobs waiting for a thread, wait until half of them have gone, so that claims stay
        # large; with a thread free, claim at once.
        worth = max(1, ahead // 2) if self._in_pool >= concurrency else 1
        if config.limit:
            allowed = config.limit - self._claimed
            room, worth = min(room, allowed), min(worth, allowed)
        return room if room >= max(worth, 1) else 0

    def _wake_claims(self) -> None:
        if not self._roomy.is_set() and self._room():
            self._roomy.set()

    async def _claim_loop(self) -> None:
        config = self.config
        backoff = Backoff()
        while not self.stopping.is_set():
            if config.limit and self._claimed >= config.limit:
                return
            want = self._room()
            if want == 0:
                self._roomy.clear()
                await first_of(self.stopping.wait(), self._roomy.wait())
                continue
            if not self._live:
                self._flush()  # idle: what was said goes out before the claim waits
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
            self._claimed += len(jobs)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "worker_id=%s claimed %d of %d (%d in hand, pace %.4fs)",
                    config.worker_id,
                    len(jobs),
                    want,
                    self._in_pool,
                    self.pace.mean_seconds,
                )
            for job in jobs:
                self._start(JobRun(job, self._deps))
            if config.once and not jobs:
                return  # --once: everything that was runnable has been taken.
            if not jobs and wait < MIN_IDLE_SECONDS:
                # --poll-interval 0 must not turn an idle worker into a busy loop of claims.
                await first_of(self.stopping.wait(), within=MIN_IDLE_SECONDS)

    def _start(self, run: JobRun) -> None:
        run.on_leave = self._left
        run.on_finished = self._finished
        self._live.add(run)
        self._idle.clear()
        self._in_pool += 1
        run.start()

    def _left(self, run: JobRun) -> None:
        """A run left the stage pool: it ran (or started and was stopped), or it was withdrawn
        before it started."""
        self._in_pool -= 1
        if run.execution_seconds is not None:
            self.pace.record(run.execution_seconds)
        self._wake_claims()

    def _finished(self, run: JobRun) -> None:
        self._live.discard(run)
        if not self._live:
            self._idle.set()
            self._flush()
        self._wake_claims()  # a settlement may have shrunk the backlog that held claims back

    def _hand_back_held(self) -> None:
        """At a stop: the jobs claimed ahead go back to the queue at once, uncounted."""
        for run in list(self._live):
            run.hand_back_if_unstarted()

    # -- stopping --------------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Wait for running jobs; once stopping, give them the grace period, then hand them back."""
        while self._live:
            if not self.stopping.is_set():
                await first_of(self.stopping.wait(), self._idle.wait())
                continue
            remaining = (
                self._stop_requested_at + self.config.shutdown_grace_seconds - time.monotonic()
            )
            if remaining > 0 and not self.hurry.is_set():
                await first_of(self.hurry.wait(), self._idle.wait(), within=remaining)
                continue
            for run in list(self._live):
                if run.state is State.QUEUED:
                    run.stop(StopReason.SHUTDOWN)
            settle_time = self.config.rpc_timeout_seconds + 1.0
            if not await self._settled(within=settle_time):
                log.warning(
                    "worker_id=%s %d job(s) could not be handed back; the heartbeat "
                    "timeout will release them",
                    self.config.worker_id,
                    len(self._live),
                )
                self.give_up.set()
                await self._settled(within=settle_time)
            return

    async def _settled(self, within: float) -> bool:
        """Wait up to `within` seconds for every live job to be settled; whether they were."""
        await first_of(self._idle.wait(), within=within)
        return not self._live
