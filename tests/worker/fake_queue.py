"""A hand-written queue service for in-process worker tests: the client's calls (`QueueCalls`)
over a few jobs held in memory, with the rules a worker relies on.

- Claim hands out QUEUED jobs (at most `max_jobs`), each RUNNING under lease 1; it waits up to
  its `wait` for one to be added, as the real Claim does.
- Complete / Fail / Release change a RUNNING job whose lease matches; a stale lease is ABORTED
  and a job that is no longer RUNNING is FAILED_PRECONDITION, as the real service answers.
- CompleteBatch / FailBatch apply the same rules to each entry, which is recorded as a call of
  its own (`complete`, `fail`) and answered with its own outcome (LEASE_LOST for a stale lease or
  a job no longer RUNNING, NOT_FOUND, LOCKED for a RUNNING job in `locked`, whose row another
  transaction holds: nothing changes); each batch call is also recorded in `batches`. `refuse`
  and `drop_answer` count batch calls of the method (a whole batch is refused, or its answer
  lost).
- Fail of a job an operator cancelled ends CANCELLED; a retryable Fail ends RETRY (10 s later),
  a permanent one FAILED.
- Heartbeats are answered with `answers[job_id]` (CONTINUE unless a test sets CANCEL or
  LEASE_LOST), a batched request's beats each in its own answer of one response.
- `hold[method]` (an asyncio.Event) keeps batch calls of the method ("complete", "fail") from
  answering until it is set; `waiting[method]` counts those held now, `most_waiting[method]` the
  most held at once.
- `refuse[method] = n` answers the next n calls of that method UNAVAILABLE without changing
  anything; `drop_answer[method] = n` makes the change, then answers UNAVAILABLE (the answer was
  lost on the way back).

Every call is recorded in `calls`, and `until(predicate)` waits on the record (a condition
notified by each call), never on a sleep.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from jobqueue import rpc
from jobqueue.v1 import job_pb2
from jobqueue.v1 import queue_service_pb2 as pb

Status = job_pb2.JobStatus
RETRY_AFTER = timedelta(seconds=10)
UNTIL_SECONDS = 10.0


def rpc_error(code: grpc.StatusCode, details: str = "fake queue service") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class FakeQueue:
    def __init__(self) -> None:
        self.jobs: dict[str, job_pb2.Job] = {}
        self.queued: list[str] = []
        self.cancelled: set[str] = set()
        # (method, job_id or "", details): every call, in order.
        self.calls: list[tuple[str, str, Any]] = []
        self.claims: list[int] = []
        # (method, entries): every batch call, in order.
        self.batches: list[tuple[str, int]] = []
        # Every job's beat, whether it came alone or in a batched request; and how many beats
        # each heartbeat message carried.
        self.beats: list[pb.HeartbeatRequest | pb.JobBeat] = []
        self.beat_messages: list[int] = []
        self.answers: dict[str, int] = {}
        self.refuse: dict[str, int] = {}
        # Batch calls (by method) that fail on the client's side, not as a gRPC status.
        self.crash: dict[str, int] = {}
        self.drop_answer: dict[str, int] = {}
        self.locked: set[str] = set()
        # The status codes the next claims fail with, one each, in order.
        self.claim_errors: list[grpc.StatusCode] = []
        self.hold: dict[str, asyncio.Event] = {}
        self.waiting: Counter[str] = Counter()
        self.most_waiting: Counter[str] = Counter()
        self._changed = asyncio.Condition()

    # -- the test's side ---------------------------------------------------------------------

    def add(self, job_input: Mapping[str, Any]) -> str:
        job_id = str(uuid.uuid4())
        self.jobs[job_id] = job_pb2.Job(
            id=job_id, status=Status.JOB_STATUS_QUEUED, max_attempts=5, input=rpc.struct(job_input)
        )
        self.queued.append(job_id)
        return job_id

    def called(self, method: str, job_id: str = "") -> list[Any]:
        """The details of each `method` call (for `job_id`, when given)."""
        return [
            details
            for name, called_id, details in self.calls
            if name == method and (not job_id or called_id == job_id)
        ]

    def stages(self, job_id: str) -> list[str]:
        """The stages this job's beats reported, each once, in order."""
        seen: list[str] = []
        for beat in self.beats:
            if beat.job_id == job_id and (not seen or seen[-1] != beat.stage):
                seen.append(beat.stage)
        return seen

    async def until(self, predicate: Callable[[], object]) -> None:
        """Wait until `predicate` holds, re-checked after every call; fail after 10 s."""
        async with asyncio.timeout(UNTIL_SECONDS), self._changed:
            await self._changed.wait_for(predicate)

    async def _record(self, method: str, job_id: str = "", details: Any = None) -> None:
        async with self._changed:
            self.calls.append((method, job_id, details))
            self._changed.notify_all()

    async def _held(self, method: str) -> None:
        """Wait while the test holds calls of `method`."""
        hold = self.hold.get(method)
        if hold is None or hold.is_set():
            return
        self.waiting[method] += 1
        self.most_waiting[method] = max(self.most_waiting[method], self.waiting[method])
        async with self._changed:
            self._changed.notify_all()
        try:
            await hold.wait()
        finally:
            self.waiting[method] -= 1

    # -- QueueCalls ----------------------------------------------------------------------------

    async def claim(self, worker_id: str, max_jobs: int, wait_seconds: float) -> list[job_pb2.Job]:
        self.claims.append(max_jobs)
        await self._record("claim", "", max_jobs)
        if self.claim_errors:
            raise rpc_error(self.claim_errors.pop(0))
        if not self.queued and wait_seconds > 0:
            async with self._changed:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: bool(self.queued)), wait_seconds
                    )
                except TimeoutError:
                    return []
        taken, self.queued = self.queued[:max_jobs], self.queued[max_jobs:]
        for job_id in taken:
            job = self.jobs[job_id]
            job.status, job.lease, job.stage, job.locked_by = (
                Status.JOB_STATUS_RUNNING,
                job.lease + 1,
                "claimed",
                worker_id,
            )
            job.attempts += 1
        return [_copy(self.jobs[job_id]) for job_id in taken]

    def heartbeats(self, requests: AsyncIterator[pb.HeartbeatRequest]) -> FakeHeartbeatCall:
        return FakeHeartbeatCall(self, requests)

    async def complete(self, job_id: str, lease: int, output: Mapping[str, Any]) -> job_pb2.Job:
        return await self._settle("complete", job_id, lease, dict(output), self._completing(output))

    async def complete_batch(self, entries: Sequence[pb.CompleteRequest]) -> list[pb.EntryResult]:
        changes = [
            (entry.job_id, entry.lease, rpc.struct_to_dict(entry.output), None) for entry in entries
        ]
        return await self._settle_batch("complete", changes)

    def _completing(self, output: Mapping[str, Any]) -> Callable[[job_pb2.Job], None]:
        def change(job: job_pb2.Job) -> None:
            job.status, job.stage = Status.JOB_STATUS_SUCCEEDED, "succeeded"
            job.output.CopyFrom(rpc.struct(output))

        return change

    async def fail(
        self, job_id: str, lease: int, *, code: str, message: str, retryable: bool
    ) -> job_pb2.Job:
        details = {"code": code, "message": message, "retryable": retryable}
        return await self._settle(
            "fail", job_id, lease, details, self._failing(job_id, code, message, retryable)
        )

    async def fail_batch(self, entries: Sequence[pb.FailRequest]) -> list[pb.EntryResult]:
        changes = [
            (
                entry.job_id,
                entry.lease,
                {"code": entry.error_code, "message": entry.message, "retryable": entry.retryable},
                (entry.error_code, entry.message, entry.retryable),
            )
            for entry in entries
        ]
        return await self._settle_batch("fail", changes)

    def _failing(
        self, job_id: str, code: str, message: str, retryable: bool
    ) -> Callable[[job_pb2.Job], None]:
        def change(job: job_pb2.Job) -> None:
            job.error_code, job.last_error = code, message
            now = datetime.now(UTC)
            job.updated_at.FromDatetime(now)
            if job_id in self.cancelled:
                job.status, job.stage = Status.JOB_STATUS_CANCELLED, "cancelled"
            elif retryable and job.attempts < job.max_attempts:
                job.status, job.stage = Status.JOB_STATUS_RETRY, "failed"
                job.run_after.FromDatetime(now + RETRY_AFTER)
            else:
                job.status, job.stage = Status.JOB_STATUS_FAILED, "failed"

        return change

    async def release(self, job_id: str, lease: int, reason: str) -> job_pb2.Job:
        def change(job: job_pb2.Job) -> None:
            job.status, job.stage = Status.JOB_STATUS_QUEUED, "released"
            job.attempts -= 1

        return await self._settle("release", job_id, lease, reason, change)

    async def get_job(self, job_id: str) -> job_pb2.Job:
        await self._record("get_job", job_id)
        return _copy(self.jobs[job_id])

    async def _settle(
        self,
        method: str,
        job_id: str,
        lease: int,
        details: Any,
        change: Callable[[job_pb2.Job], None],
    ) -> job_pb2.Job:
        await self._record(method, job_id, details)
        if self.refuse.get(method, 0) > 0:
            self.refuse[method] -= 1
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the queue service is restarting")
        job = self.jobs[job_id]
        if job.lease != lease:
            raise rpc_error(grpc.StatusCode.ABORTED, "lease lost")
        if job.status != Status.JOB_STATUS_RUNNING:
            raise rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "the job is not running")
        change(job)
        if self.drop_answer.get(method, 0) > 0:
            self.drop_answer[method] -= 1
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the answer was lost")
        return _copy(job)

    async def _settle_batch(
        self, method: str, changes: Sequence[tuple[str, int, Any, tuple[str, str, bool] | None]]
    ) -> list[pb.EntryResult]:
        """Each entry as its own call would be, answered with its outcome; `refuse` and
        `drop_answer` count whole batches."""
        self.batches.append((method, len(changes)))
        for job_id, _lease, details, _failure in changes:
            await self._record(method, job_id, details)
        await self._held(method)
        if self.crash.get(method, 0) > 0:
            self.crash[method] -= 1
            raise RuntimeError("the client failed to build the call")
        if self.refuse.get(method, 0) > 0:
            self.refuse[method] -= 1
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the queue service is restarting")
        results = []
        for job_id, lease, details, failure in changes:
            job = self.jobs.get(job_id)
            if job is None:
                results.append(pb.EntryResult(job_id=job_id, outcome=pb.OUTCOME_NOT_FOUND))
                continue
            if job.lease != lease or job.status != Status.JOB_STATUS_RUNNING:
                outcome = pb.OUTCOME_LEASE_LOST
            elif job_id in self.locked:
                outcome = pb.OUTCOME_LOCKED
            else:
                change = (
                    self._completing(details)
                    if failure is None
                    else self._failing(job_id, *failure)
                )
                change(job)
                outcome = pb.OUTCOME_OK
            results.append(pb.EntryResult(job_id=job_id, outcome=outcome, status=job.status))
        if self.drop_answer.get(method, 0) > 0:
            self.drop_answer[method] -= 1
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the answer was lost")
        return results


class FakeHeartbeatCall:
    """One heartbeat stream: each beat is recorded and answered at once."""

    def __init__(self, queue: FakeQueue, requests: AsyncIterator[pb.HeartbeatRequest]) -> None:
        self._queue = queue
        self._requests = requests

    def __aiter__(self) -> AsyncIterator[pb.HeartbeatResponse]:
        return self._answers()

    async def _answers(self) -> AsyncIterator[pb.HeartbeatResponse]:
        async for request in self._requests:
            self._queue.beat_messages.append(len(request.beats) or 1)
            if not request.beats:
                yield await self._answer(request)
                continue
            response = pb.HeartbeatResponse()
            for beat in request.beats:
                answer = await self._answer(beat)
                response.beats.add(job_id=answer.job_id, lease=answer.lease, action=answer.action)
            yield response

    async def _answer(self, beat: pb.HeartbeatRequest | pb.JobBeat) -> pb.HeartbeatResponse:
        """One beat, recorded (in `beats`, and as a `heartbeat` call), and its answer."""
        self._queue.beats.append(beat)
        await self._queue._record("heartbeat", beat.job_id, beat.stage)
        return pb.HeartbeatResponse(
            job_id=beat.job_id,
            lease=beat.lease,
            action=self._queue.answers.get(beat.job_id, pb.HEARTBEAT_ACTION_CONTINUE),  # type: ignore[arg-type]
        )

    def cancel(self) -> bool:
        return True


def _copy(job: job_pb2.Job) -> job_pb2.Job:
    copy = job_pb2.Job()
    copy.CopyFrom(job)
    return copy
