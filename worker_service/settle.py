"""How job runs settle their jobs with the queue service: Complete, Fail or Release, made to stick.

Completes (and most Fails) go out in batches (`Batcher`: CompleteBatch / FailBatch) that add no
waiting: the first job to finish is sent at once, and so is the next while fewer than
SETTLES_IN_FLIGHT calls are in flight; whatever finishes while they are goes together in the
next, up to SETTLE_BATCH entries a call. Each job in a batch is settled exactly as a call of its own
would be (`Settler`, which the single calls still use): retried while the queue service is
unreachable, for as long as the lease holds, so that a queue service restart in the middle of
a job costs nothing but a short wait; the lease makes a repeat harmless. A repeat refused after
an earlier attempt may have landed is settled by reading the job back ("landed earlier").
Retrying ends when the lease is lost, when the call is refused for good, or when the worker's
shutdown runs out of time; then the heartbeat timeout releases the job.
A batch entry whose job row another transaction holds comes back OUTCOME_LOCKED (nothing
changed, the rest of the batch settled): only that entry is sent again, after its own pause.

Also here: what is sent (`job_output`: plain JSON with the stage timings) and what is said
after a Fail (`next_step`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import struct_pb2

from jobqueue import rpc
from jobqueue.v1 import job_pb2
from jobqueue.v1 import queue_service_pb2 as pb
from worker_service.client import QueueCalls
from worker_service.waiting import Backoff, first_of

log = logging.getLogger(__name__)

Status = job_pb2.JobStatus

# Codes that say a Complete/Fail/Release changed nothing because the job is not ours (any more).
NOT_OURS_CODES = frozenset(
    {grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
)
CANCELLED_CODE = "CANCELLED"
CANCELLED_MESSAGE = "cancelled by an operator while running"
RELEASE_REASON = "the worker shut down before the job finished"
# The queue service takes at most this many entries in one batch call.
MAX_BATCH = 1000
# A worker's batch call carries at most this many entries, and at most this many of its calls
# are in flight at once. A settle statement costs more per row past a few hundred rows, and two
# statements at once keep two database backends busy, so a worker that finishes jobs faster than
# one call comes back settles them without waiting for each answer in turn.
SETTLE_BATCH = 250
SETTLES_IN_FLIGHT = 2


class Settler:
    """Settles one job (its id and lease). Each method returns the job after the call, or None
    when the job is not ours any more (or could not be settled): the caller then reports a lost
    lease."""

    def __init__(
        self,
        client: QueueCalls,
        job_id: str,
        lease: int,
        log: logging.LoggerAdapter,  # type: ignore[type-arg]
        *,
        lease_lost: Callable[[], bool],
        give_up: asyncio.Event,
    ) -> None:
        self._client = client
        self._job_id = job_id
        self._lease = lease
        self._log = log
        self._lease_lost = lease_lost
        self._give_up = give_up

    async def complete(self, result: Mapping[str, Any]) -> job_pb2.Job | None:
        return await self.settle(
            "Complete",
            lambda: self._client.complete(self._job_id, self._lease, result),
            landed=completed,
        )

    async def fail(self, code: str, message: str, *, retryable: bool) -> job_pb2.Job | None:
        return await self.settle(
            "Fail",
            lambda: self._client.fail(
                self._job_id, self._lease, code=code, message=message, retryable=retryable
            ),
            landed=lambda job: failed_with(job, code),
        )

    async def cancelled(self) -> job_pb2.Job | None:
        """Fail the job an operator cancelled: the queue service records it as CANCELLED."""
        return await self.settle(
            "Fail",
            lambda: self._client.fail(
                self._job_id,
                self._lease,
                code=CANCELLED_CODE,
                message=CANCELLED_MESSAGE,
                retryable=False,
            ),
            landed=lambda job: failed_with(job, CANCELLED_CODE),
        )

    async def release(self) -> job_pb2.Job | None:
        """Release, not Fail: the job is QUEUED again at once for another worker, and the
        attempt it did not finish is not counted against it."""
        return await self.settle(
            "Release",
            lambda: self._client.release(self._job_id, self._lease, RELEASE_REASON),
            landed=lambda job: job.stage == "released" or job.status == Status.JOB_STATUS_CANCELLED,
        )

    async def settle(
        self,
        what: str,
        call: Callable[[], Awaitable[job_pb2.Job]],
        *,
        landed: Callable[[job_pb2.Job], bool],
    ) -> job_pb2.Job | None:
        """Make a call stick: retried while the service is unreachable.

        `landed` says whether a job read back is in the state this call makes. "Same lease, not
        RUNNING" alone is not enough: the stale sweep also ends a job without taking a new
        lease, and its outcome is not ours to report.
        """
        backoff = Backoff()
        uncertain = False
        while True:
            if self._give_up.is_set():
                return None
            if self._lease_lost():
                # An earlier try may have landed, and ended the lease itself (a Complete whose
                # answer was lost makes the job SUCCEEDED, so its next beat hears lease_lost).
                return await self.landed_earlier(landed) if uncertain else None
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code in NOT_OURS_CODES:
                    return await self.landed_earlier(landed) if uncertain else None
                if code not in rpc.RETRYABLE_CODES:
                    self._log.error(
                        "%s refused (%s); the heartbeat timeout will release the job",
                        what,
                        rpc.describe(error),
                    )
                    return None
                uncertain = True
                self._log.warning(
                    "%s failed (%s); retrying in %.1fs", what, rpc.describe(error), backoff.delay
                )
            await first_of(self._give_up.wait(), within=backoff.delay)
            backoff.grow()

    async def landed_earlier(self, landed: Callable[[job_pb2.Job], bool]) -> job_pb2.Job | None:
        """After a repeat was refused: the job read back, if it is as our earlier call left it."""
        try:
            job = await self._client.get_job(self._job_id)
        except grpc.aio.AioRpcError:
            return None
        if job.lease == self._lease and job.status != Status.JOB_STATUS_RUNNING and landed(job):
            return job
        return None


def completed(job: job_pb2.Job) -> bool:
    """A Complete's mark on a job read back."""
    return job.status == Status.JOB_STATUS_SUCCEEDED


def failed_with(job: job_pb2.Job, code: str) -> bool:
    """A Fail's mark on a job read back (a cancel's Fail ends the job CANCELLED)."""
    if code == CANCELLED_CODE:
        return job.status == Status.JOB_STATUS_CANCELLED
    return job.error_code == code


class LeaseHolder(Protocol):
    """The job run a settlement is for: its job, lease and log, and whether the lease is gone."""

    job_id: str
    lease: int

    @property
    def log(self) -> logging.LoggerAdapter: ...  # type: ignore[type-arg]

    def lease_lost(self) -> bool: ...


# What a settled job looks like after its call: the job (a call of its own, or read back), or
# its entry's answer in a batch (its id and status).
Settled = job_pb2.Job | pb.EntryResult


@dataclass(eq=False, slots=True)
class Settlement:
    """One job's Complete or Fail, waiting for its batch."""

    request: pb.CompleteRequest | pb.FailRequest
    holder: LeaseHolder
    # Hears the job after the call, or None when the job is not ours any more or could not be
    # settled.
    done: Callable[[Settled | None], None]
    # An earlier attempt failed in a way that may have landed (its answer was lost).
    uncertain: bool = False
    # The pauses before it is sent again after its row was found locked (OUTCOME_LOCKED).
    locked: Backoff | None = None


@dataclass(frozen=True)
class BatchKind:
    """One kind of batched settlement: its name in log lines, its batch call, the same job's
    call of its own (a Settler's), and how a job read back shows that the call landed."""

    what: str
    send: Callable[[QueueCalls, Sequence[Any]], Awaitable[list[pb.EntryResult]]]
    alone: Callable[[Settler, Any], Awaitable[job_pb2.Job | None]]
    landed: Callable[[Any, job_pb2.Job], bool]


COMPLETES = BatchKind(
    "Complete",
    lambda client, entries: client.complete_batch(entries),
    lambda settler, request: settler.complete(rpc.struct_to_dict(request.output)),
    lambda _request, job: completed(job),
)
FAILURES = BatchKind(
    "Fail",
    lambda client, entries: client.fail_batch(entries),
    lambda settler, request: settler.fail(
        request.error_code, request.message, retryable=request.retryable
    ),
    lambda request, job: failed_with(job, request.error_code),
)


class Batcher:
    """Settles jobs in batches of one kind (`Batcher.completes` or `Batcher.failures`)."""

    def __init__(
        self, kind: BatchKind, client: QueueCalls, give_up: asyncio.Event, worker_id: str
    ) -> None:
        self._kind = kind
        self._client = client
        self._give_up = give_up
        self._worker_id = worker_id
        self._pending: list[Settlement] = []
        # The batch calls in flight, and the pause after a call that failed: no batch leaves
        # before `_resume_at` (the loop's clock).
        self._flights: set[asyncio.Future[None]] = set()
        self._backoff = Backoff()
        self._resume_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._singles: set[asyncio.Task[None]] = set()

    @classmethod
    def completes(cls, client: QueueCalls, give_up: asyncio.Event, worker_id: str) -> Batcher:
        return cls(COMPLETES, client, give_up, worker_id)

    @classmethod
    def failures(cls, client: QueueCalls, give_up: asyncio.Event, worker_id: str) -> Batcher:
        return cls(FAILURES, client, give_up, worker_id)

    @property
    def unsent(self) -> int:
        """Jobs waiting for a batch call (not those in flight)."""
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._kind.what}-batches")

    async def stop(self) -> None:
        tasks = [*self._singles, *self._flights, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def add(self, settlement: Settlement) -> None:
        self._pending.append(settlement)
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._pending and len(self._flights) < SETTLES_IN_FLIGHT:
                pause = self._resume_at - loop.time()
                if pause > 0 and not self._give_up.is_set():
                    await first_of(self._give_up.wait(), within=pause)
                    continue
                batch = [entry for entry in self._pending[:SETTLE_BATCH] if self._still_ours(entry)]
                del self._pending[:SETTLE_BATCH]
                if batch:
                    flight = asyncio.ensure_future(self._fly(batch))
                    self._flights.add(flight)
                    flight.add_done_callback(self._landed)
                continue
            self._wake.clear()
            await self._wake.wait()

    def _landed(self, flight: asyncio.Future[None]) -> None:
        self._flights.discard(flight)
        self._wake.set()

    async def _fly(self, batch: list[Settlement]) -> None:
        """One batch call and its answers. A batch the service could not take goes back to the
        front of the line, and no batch leaves until the pause after the failure is over."""
        try:
            results = await self._kind.send(self._client, [entry.request for entry in batch])
        except grpc.aio.AioRpcError as error:
            if error.code() not in rpc.RETRYABLE_CODES:
                # Refused as a whole (a malformed entry, say): each job on its own, as a
                # single call, so that one job's problem stays its own.
                for entry in batch:
                    self._single(entry)
                return
            for entry in batch:
                entry.uncertain = True
            self._pending[:0] = batch
            now = asyncio.get_running_loop().time()
            if self._resume_at <= now:  # not already pausing for a call that failed beside it
                self._resume_at = now + self._backoff.delay
                self._backoff.grow()
            log.warning(
                "worker_id=%s %s failed (%s) for %d job(s) (%s); retrying in %.1fs",
                self._worker_id,
                self._kind.what,
                rpc.describe(error),
                len(batch),
                _some_ids(batch),
                self._resume_at - now,
            )
            return
        except Exception:
            # Not the service's answer but a fault on this side: each job on its own, as a
            # single call, rather than left settling (and beating) until the worker exits.
            log.exception(
                "worker_id=%s %s failed for %d job(s); settling each alone",
                self._worker_id,
                self._kind.what,
                len(batch),
            )
            for entry in batch:
                self._single(entry)
            return
        if self._resume_at <= asyncio.get_running_loop().time():
            # Not while a call beside it is paused for failing: its pause would stop growing.
            self._backoff.reset()
        if log.isEnabledFor(logging.DEBUG):
            what = self._kind.what
            log.debug("worker_id=%s %s: %d job(s)", self._worker_id, what, len(batch))
        # The service answers each entry in its place. (By id, a batch holding one job under two
        # leases, an old run's and a new one's, would give both the same answer.)
        if [result.job_id for result in results] == [entry.request.job_id for entry in batch]:
            for entry, result in zip(batch, results, strict=True):
                self._answered(entry, result)
            return
        by_id = {result.job_id: result for result in results}
        for entry in batch:
            self._answered(entry, by_id.get(entry.request.job_id))

    def _locked(self, entry: Settlement) -> None:
        """Its row was locked (a StoreAdvert, an operator's transaction): nothing changed, and
        the rest of its batch settled. Sent again, alone with whatever is pending then, after a
        pause of its own that grows while the lock lasts; the others never wait for it, and it
        does not count in the backlog that holds claims back."""
        if entry.locked is None:
            entry.locked = Backoff()
        else:
            entry.locked.grow()
        delay = entry.locked.delay
        entry.holder.log.info(
            "%s met a locked row (another transaction holds the job); again in %.1fs",
            self._kind.what,
            delay,
        )

        async def later() -> None:
            await first_of(self._give_up.wait(), within=delay)
            self.add(entry)

        self._spawn(later())

    def _still_ours(self, entry: Settlement) -> bool:
        """Retrying ends when the lease is lost or the shutdown is out of time. A lease lost
        after a try whose answer never came may have been lost to that very try (the job it
        completed beats lease_lost): the job is read back before it counts as lost."""
        if self._give_up.is_set():
            entry.done(None)
            return False
        if entry.holder.lease_lost():
            if entry.uncertain:
                self._spawn(self._landed_earlier(entry))
            else:
                entry.done(None)
            return False
        return True

    def _answered(self, entry: Settlement, result: pb.EntryResult | None) -> None:
        if result is not None and result.outcome == pb.OUTCOME_OK:
            entry.done(result)
        elif result is not None and result.outcome == pb.OUTCOME_LOCKED:
            self._locked(entry)
        elif entry.uncertain or result is None:
            # LEASE_LOST / NOT_FOUND after an attempt that may have landed: read the job back.
            self._spawn(self._landed_earlier(entry))
        else:
            entry.done(None)

    async def _landed_earlier(self, entry: Settlement) -> None:
        request = entry.request
        landed = self._kind.landed
        job = await self._settler(entry).landed_earlier(lambda job: landed(request, job))
        entry.done(job)

    def _single(self, entry: Settlement) -> None:
        async def alone() -> None:
            job = await self._kind.alone(self._settler(entry), entry.request)
            entry.done(job)

        self._spawn(alone())

    def _settler(self, entry: Settlement) -> Settler:
        holder = entry.holder
        return Settler(
            self._client,
            holder.job_id,
            holder.lease,
            holder.log,
            lease_lost=holder.lease_lost,
            give_up=self._give_up,
        )

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._singles.add(task)
        task.add_done_callback(self._singles.discard)


def _some_ids(batch: Sequence[Settlement], shown: int = 5) -> str:
    ids = ", ".join(entry.request.job_id[:8] for entry in batch[:shown])
    return ids + (f" and {len(batch) - shown} more" if len(batch) > shown else "")


def complete_request(
    job_id: str, lease: int, output: Mapping[str, Any], timings: Mapping[str, float]
) -> pb.CompleteRequest:
    """A Complete entry carrying `job_output(output, timings)`.

    Written straight into the request's Struct in one walk, which also checks that the output is
    plain JSON already (the usual case); protobuf's own `Struct.update` tests each value against
    an abstract base class and costs more than the rest of a quick job. Any other output goes
    through `job_output`.
    """
    request = pb.CompleteRequest(job_id=job_id, lease=lease)
    fields = request.output.fields
    if _fill(fields, output) and _fill(fields["stage_timings"].struct_value.fields, timings):
        return request
    request.output.Clear()
    request.output.update(job_output(output, timings))
    return request


def _fill(fields: Any, mapping: Mapping[str, Any]) -> bool:
    """Write `mapping` into a Struct's fields; False (part written) at anything not plain JSON."""
    for key, value in mapping.items():
        if type(key) is not str or not _set(fields[key], value):
            return False
    return True


def _set(target: struct_pb2.Value, value: object) -> bool:
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            return False
        target.number_value = value  # type: ignore[assignment]
    elif kind is str:
        if "\x00" in value:  # type: ignore[operator]
            return False
        target.string_value = value  # type: ignore[assignment]
    elif kind is int or kind is bool:
        if kind is bool:
            target.bool_value = value  # type: ignore[assignment]
        else:
            target.number_value = value  # type: ignore[assignment]
    elif value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif kind is dict:
        return _fill(target.struct_value.fields, value)  # type: ignore[arg-type]
    elif kind is list:
        values = target.list_value.values
        return all(_set(values.add(), item) for item in value)  # type: ignore[attr-defined]
    else:
        return False
    return True


def job_output(output: Mapping[str, Any], timings: Mapping[str, float]) -> dict[str, Any]:
    """What Complete sends: the stages' output as plain JSON, with each stage's seconds.

    An output that is plain JSON already (the usual case) is sent as it is, without a round trip
    through the JSON encoder.
    """
    result = dict(output) if is_json_safe(output) else json_safe(output)
    result["stage_timings"] = dict(timings)
    return result


def is_json_safe(value: object) -> bool:
    """Whether `value` is plain JSON that a Struct carries as it is and jsonb accepts: strings
    without NUL, finite numbers, booleans, None, and lists and string-keyed objects of these."""
    if isinstance(value, str):
        return "\x00" not in value
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and is_json_safe(item) for key, item in value.items())
    if isinstance(value, list):
        return all(is_json_safe(item) for item in value)
    return False


def json_safe(value: Mapping[str, Any]) -> dict[str, Any]:
    """The job output as plain JSON (paths and the like become strings) for a protobuf Struct.

    NUL characters (which a transcript or a tool's output can carry) become U+FFFD: PostgreSQL's
    jsonb refuses them, and a refused output would leave finished work to be run again.
    """
    text = json.dumps(dict(value), default=str).replace("\\u0000", "\\ufffd")
    result: dict[str, Any] = json.loads(text)
    return result


def next_step(job: job_pb2.Job) -> str:
    """What the queue service decided after a Fail, for the output line."""
    if job.status == Status.JOB_STATUS_RETRY:
        wait = job.run_after.ToDatetime() - job.updated_at.ToDatetime()
        return f"will retry in {max(0.0, wait.total_seconds()):.1f}s"
    if job.status == Status.JOB_STATUS_CANCELLED:
        return "cancelled"
    if job.attempts >= job.max_attempts:
        return f"will not retry: {job.attempts}/{job.max_attempts} attempts used"
    return "will not retry: permanent error"
