"""How a job run settles its job with the queue service: Complete, Fail or Release, made to stick.

Each call is retried while the queue service is unreachable, for as long as the lease holds: a
queue service restart in the middle of a job costs nothing but a short wait. The lease makes a
repeat harmless. A repeat refused after an earlier attempt may have landed is settled by reading
the job back ("landed earlier"). Retrying ends when the lease is lost, when the call is refused
for good, or when the worker's shutdown runs out of time; then the heartbeat timeout releases
the job.

Also here: what is sent (`job_output`: plain JSON with the stage timings) and what is said
after a Fail (`next_step`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from jobqueue import rpc
from jobqueue.v1 import job_pb2
from worker_service.client import QueueCalls
from worker_service.waiting import Backoff, first_of

Status = job_pb2.JobStatus

# Codes that say a Complete/Fail/Release changed nothing because the job is not ours (any more).
NOT_OURS_CODES = frozenset(
    {grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
)
CANCELLED_MESSAGE = "cancelled by an operator while running"
RELEASE_REASON = "the worker shut down before the job finished"


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
        return await self._settle(
            "Complete",
            lambda: self._client.complete(self._job_id, self._lease, result),
            landed=lambda job: job.status == Status.JOB_STATUS_SUCCEEDED,
        )

    async def fail(self, code: str, message: str, *, retryable: bool) -> job_pb2.Job | None:
        return await self._settle(
            "Fail",
            lambda: self._client.fail(
                self._job_id, self._lease, code=code, message=message, retryable=retryable
            ),
            landed=lambda job: job.error_code == code,
        )

    async def cancelled(self) -> job_pb2.Job | None:
        """Fail the job an operator cancelled: the queue service records it as CANCELLED."""
        return await self._settle(
            "Fail",
            lambda: self._client.fail(
                self._job_id,
                self._lease,
                code="CANCELLED",
                message=CANCELLED_MESSAGE,
                retryable=False,
            ),
            landed=lambda job: job.status == Status.JOB_STATUS_CANCELLED,
        )

    async def release(self) -> job_pb2.Job | None:
        """Release, not Fail: the job is QUEUED again at once for another worker, and the
        attempt it did not finish is not counted against it."""
        return await self._settle(
            "Release",
            lambda: self._client.release(self._job_id, self._lease, RELEASE_REASON),
            landed=lambda job: job.stage == "released" or job.status == Status.JOB_STATUS_CANCELLED,
        )

    async def _settle(
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
            if self._lease_lost() or self._give_up.is_set():
                return None
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code in NOT_OURS_CODES:
                    return await self._landed_earlier(landed) if uncertain else None
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

    async def _landed_earlier(self, landed: Callable[[job_pb2.Job], bool]) -> job_pb2.Job | None:
        try:
            job = await self._client.get_job(self._job_id)
        except grpc.aio.AioRpcError:
            return None
        if job.lease == self._lease and job.status != Status.JOB_STATUS_RUNNING and landed(job):
            return job
        return None


def job_output(output: Mapping[str, Any], timings: Mapping[str, float]) -> dict[str, Any]:
    """What Complete sends: the stages' output as plain JSON, with each stage's seconds."""
    result = json_safe(output)
    result["stage_timings"] = dict(timings)
    return result


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
