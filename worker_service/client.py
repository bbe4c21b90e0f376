"""The worker's only way out: gRPC calls to the queue service, each with a deadline.

The worker never opens a database connection; everything it knows comes through here. Calls
carry `authorization: Bearer <token>` when a token is configured (QUEUE_WORKER_TOKEN, or
QUEUE_AUTH_TOKEN; the operator commands send QUEUE_ADMIN_TOKEN). Retrying is left to
the callers, who know whether a call is safe to repeat (a Claim is not; a Complete is, because
its lease fences it). The bearer metadata, the channel options, the retryable codes and the
Duration/Struct conversions are the contract's side (`jobqueue.rpc`), shared with every client.

`QueueCalls` is what the claim loop, the job runs and the heartbeat stream use of this client:
the seam where the worker's tests put a hand-written fake queue service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

import grpc

from jobqueue import rpc
from jobqueue.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_pb2,
    queue_service_pb2,
    queue_service_pb2_grpc,
)
from worker_service import metrics
from worker_service.config import WorkerConfig

log = logging.getLogger(__name__)

# The heartbeat stream is reopened after this long, so that even it has a deadline; jobs do not
# notice (their next beat goes out on the new stream).
HEARTBEAT_STREAM_SECONDS = 600.0


class QueueUnreachable(Exception):
    """The queue service did not answer within the start-up window."""


class AuthRefused(Exception):
    """The queue service refused our token (or its absence)."""


class QueueCalls(Protocol):
    """The calls a running worker makes; each raises grpc.aio.AioRpcError as a real call does."""

    async def claim(
        self, worker_id: str, max_jobs: int, wait_seconds: float
    ) -> list[job_pb2.Job]: ...

    # Returns the stream call: iterated for the answers, cancel() to end it.
    def heartbeats(self, requests: AsyncIterator[queue_service_pb2.HeartbeatRequest]) -> Any: ...

    async def complete(self, job_id: str, lease: int, output: Mapping[str, Any]) -> job_pb2.Job: ...

    # Each entry's own outcome, in the order of the entries.
    async def complete_batch(
        self, entries: Sequence[queue_service_pb2.CompleteRequest]
    ) -> list[queue_service_pb2.EntryResult]: ...

    async def fail(
        self, job_id: str, lease: int, *, code: str, message: str, retryable: bool
    ) -> job_pb2.Job: ...

    async def fail_batch(
        self, entries: Sequence[queue_service_pb2.FailRequest]
    ) -> list[queue_service_pb2.EntryResult]: ...

    async def release(self, job_id: str, lease: int, reason: str) -> job_pb2.Job: ...

    async def get_job(self, job_id: str) -> job_pb2.Job: ...


class QueueClient:
    def __init__(self, config: WorkerConfig) -> None:
        self._config = config
        self._channel = rpc.open_channel(config.queue_addr, config.tls)
        self._queue = queue_service_pb2_grpc.QueueServiceStub(self._channel)
        self._admin = admin_service_pb2_grpc.AdminServiceStub(self._channel)
        self._metadata = rpc.bearer_metadata(config.auth_token)
        self._timeout = config.rpc_timeout_seconds

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def check(self) -> None:
        """Wait until the queue service answers an authenticated call, briefly.

        UNAVAILABLE is retried for `connect_timeout_seconds` (compose may start the worker a moment
        before the service listens); a refused token fails at once, since waiting cannot fix it.
        """
        deadline = time.monotonic() + self._config.connect_timeout_seconds
        delay = 0.1
        while True:
            try:
                await self._admin.GetQueueStats(
                    admin_service_pb2.GetQueueStatsRequest(queue=self._config.queue),
                    timeout=min(self._timeout, 5.0),
                    metadata=self._metadata,
                )
                return
            except grpc.aio.AioRpcError as error:
                if error.code() in rpc.AUTH_CODES:
                    raise AuthRefused(rpc.describe(error)) from None
                if error.code() not in rpc.RETRYABLE_CODES or time.monotonic() + delay > deadline:
                    raise QueueUnreachable(rpc.describe(error)) from None
                log.debug("queue service not reachable yet (%s); retrying", rpc.describe(error))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def claim(self, worker_id: str, max_jobs: int, wait_seconds: float) -> list[job_pb2.Job]:
        request = queue_service_pb2.ClaimRequest(
            worker_id=worker_id,
            max_jobs=max_jobs,
            wait=rpc.duration(wait_seconds),
            queue=self._config.queue,
        )
        # The service answers (empty) just before our deadline rather than past it.
        response = await self._queue.Claim(
            request, timeout=wait_seconds + self._timeout, metadata=self._metadata
        )
        return list(response.jobs)

    def heartbeats(
        self, requests: AsyncIterator[queue_service_pb2.HeartbeatRequest]
    ) -> Any:  # grpc.aio.StreamStreamCall; the stubs type it loosely
        def open_call(requests: AsyncIterator[queue_service_pb2.HeartbeatRequest]) -> Any:
            return self._queue.Heartbeat(
                requests, timeout=HEARTBEAT_STREAM_SECONDS, metadata=self._metadata
            )

        # With metrics on, each message's answer is timed (the heartbeat lag).
        if metrics.enabled():
            return metrics.TimedHeartbeats(open_call, requests)
        return open_call(requests)

    async def complete(self, job_id: str, lease: int, output: Mapping[str, Any]) -> job_pb2.Job:
        response = await self._queue.Complete(
            queue_service_pb2.CompleteRequest(
                job_id=job_id, lease=lease, output=rpc.struct(output)
            ),
            timeout=self._timeout,
            metadata=self._metadata,
        )
        return response.job

    async def complete_batch(
        self, entries: Sequence[queue_service_pb2.CompleteRequest]
    ) -> list[queue_service_pb2.EntryResult]:
        request = queue_service_pb2.CompleteBatchRequest(entries=entries)
        return await self._batch(self._queue.CompleteBatch, request)

    async def fail_batch(
        self, entries: Sequence[queue_service_pb2.FailRequest]
    ) -> list[queue_service_pb2.EntryResult]:
        request = queue_service_pb2.FailBatchRequest(entries=entries)
        return await self._batch(self._queue.FailBatch, request)

    async def _batch(self, call: Any, request: Any) -> list[queue_service_pb2.EntryResult]:
        response = await call(request, timeout=self._timeout, metadata=self._metadata)
        return list(response.results)

    async def fail(
        self,
        job_id: str,
        lease: int,
        *,
        code: str,
        message: str,
        retryable: bool,
        retry_after_seconds: float | None = None,
    ) -> job_pb2.Job:
        request = queue_service_pb2.FailRequest(
            job_id=job_id, lease=lease, error_code=code, message=message, retryable=retryable
        )
        if retry_after_seconds is not None:
            request.retry_after.CopyFrom(rpc.duration(retry_after_seconds))
        response = await self._queue.Fail(request, timeout=self._timeout, metadata=self._metadata)
        return response.job

    async def release(self, job_id: str, lease: int, reason: str) -> job_pb2.Job:
        """Hand a running job back without using up its attempt (the worker is stopping)."""
        response = await self._queue.Release(
            queue_service_pb2.ReleaseRequest(job_id=job_id, lease=lease, reason=reason),
            timeout=self._timeout,
            metadata=self._metadata,
        )
        return response.job

    async def get_job(self, job_id: str) -> job_pb2.Job:
        return await self._admin.GetJob(
            admin_service_pb2.GetJobRequest(job_id=job_id),
            timeout=self._timeout,
            metadata=self._metadata,
        )

    async def release_stale(self) -> int:
        response = await self._admin.ReleaseStaleJobs(
            admin_service_pb2.ReleaseStaleJobsRequest(),
            timeout=self._timeout,
            metadata=self._metadata,
        )
        return int(response.released_count)

    async def running_jobs(self) -> list[job_pb2.RunningJob]:
        """Every RUNNING job, a page at a time."""
        jobs: list[job_pb2.RunningJob] = []
        request = admin_service_pb2.ListRunningJobsRequest()
        while True:
            response = await self._admin.ListRunningJobs(
                request, timeout=self._timeout, metadata=self._metadata
            )
            jobs.extend(response.jobs)
            if not response.next_page_token:
                return jobs
            request.page_token = response.next_page_token
