"""The worker's only way out: gRPC calls to the queue service, each with a deadline.

The worker never opens a database connection; everything it knows comes through here. Calls
carry `authorization: Bearer $QUEUE_AUTH_TOKEN` when a token is configured. Retrying is left to
the callers, who know whether a call is safe to repeat (a Claim is not; a Complete is, because
its lease fences it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2

from jobqueue.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_pb2,
    queue_service_pb2,
    queue_service_pb2_grpc,
)
from queue_service.auth import client_metadata
from worker_service.config import WorkerConfig

log = logging.getLogger(__name__)

# Codes after which the same call may simply be made again: nothing changed, or a lease fences
# a repeat. INTERNAL is not here: it means a bug, and repeating it would hide it.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
AUTH_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})

CHANNEL_OPTIONS = [
    # A worker's heartbeat stream lives for hours: keepalive pings find a dead peer (a host that
    # vanished without a RST) within ~30 s. The server permits pings every 10 s.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # After a queue service restart, reconnect within a second or two, not grpc's default ~minute.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
]

# The heartbeat stream is reopened after this long, so that even it has a deadline; jobs do not
# notice (their next beat goes out on the new stream).
HEARTBEAT_STREAM_SECONDS = 600.0


class QueueUnreachable(Exception):
    """The queue service did not answer within the start-up window."""


class AuthRefused(Exception):
    """The queue service refused our token (or its absence)."""


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(int(seconds * 1e9))
    return message


def describe(error: grpc.aio.AioRpcError) -> str:
    """`UNAVAILABLE: details`, first line only: enough for an operator, never a stack trace."""
    details = (error.details() or "").strip().splitlines()
    return f"{error.code().name}: {details[0] if details else 'no details'}"


class QueueClient:
    def __init__(self, config: WorkerConfig) -> None:
        self._config = config
        self._channel = grpc.aio.insecure_channel(config.queue_addr, options=CHANNEL_OPTIONS)
        self._queue = queue_service_pb2_grpc.QueueServiceStub(self._channel)
        self._admin = admin_service_pb2_grpc.AdminServiceStub(self._channel)
        self._metadata = client_metadata(config.auth_token)
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
                if error.code() in AUTH_CODES:
                    raise AuthRefused(describe(error)) from None
                if error.code() not in RETRYABLE_CODES or time.monotonic() + delay > deadline:
                    raise QueueUnreachable(describe(error)) from None
                log.debug("queue service not reachable yet (%s); retrying", describe(error))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def claim(self, worker_id: str, max_jobs: int, wait_seconds: float) -> list[job_pb2.Job]:
        request = queue_service_pb2.ClaimRequest(
            worker_id=worker_id,
            max_jobs=max_jobs,
            wait=duration(wait_seconds),
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
        return self._queue.Heartbeat(
            requests, timeout=HEARTBEAT_STREAM_SECONDS, metadata=self._metadata
        )

    async def complete(self, job_id: str, lease: int, output: Mapping[str, Any]) -> job_pb2.Job:
        message = struct_pb2.Struct()
        message.update(dict(output))
        response = await self._queue.Complete(
            queue_service_pb2.CompleteRequest(job_id=job_id, lease=lease, output=message),
            timeout=self._timeout,
            metadata=self._metadata,
        )
        return response.job

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
            request.retry_after.CopyFrom(duration(retry_after_seconds))
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
        response = await self._admin.ListRunningJobs(
            admin_service_pb2.ListRunningJobsRequest(),
            timeout=self._timeout,
            metadata=self._metadata,
        )
        return list(response.jobs)
