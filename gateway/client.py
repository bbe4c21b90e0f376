"""The gateway's only way to the queue service: AdminService and grpc.health.v1 calls, each with
the bearer token and a deadline.

Putting every call behind this class is what guarantees "every gRPC call has a deadline": a hung
queue service costs a request at most GATEWAY_GRPC_TIMEOUT_SECONDS (then 504), never a stuck
worker thread or an HTTP request open forever. Calls do not wait for the channel to become ready,
so a queue service that is down is reported at once (503), not after the deadline.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobqueue.v1 import admin_service_pb2 as pb
from jobqueue.v1 import admin_service_pb2_grpc, job_pb2
from queue_service.auth import client_metadata

ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
# /healthz answers probes that have short timeouts of their own.
HEALTH_TIMEOUT_SECONDS = 3.0

CHANNEL_OPTIONS = [
    # A page of 500 jobs with large outputs can exceed gRPC's 4 MiB default.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Notice a dead connection (queue service restarted, NAT dropped) between requests.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # After an outage the channel retries on an exponential backoff (up to 2 minutes by
    # default), answering 503 meanwhile; cap it so the gateway recovers within seconds.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


def open_channel(queue_addr: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(queue_addr, options=CHANNEL_OPTIONS)


class QueueClient:
    def __init__(self, channel: grpc.aio.Channel, *, token: str | None, timeout: float) -> None:
        self._admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self._metadata = client_metadata(token)
        self._timeout = timeout

    async def enqueue(self, request: pb.EnqueueJobRequest) -> pb.EnqueueJobResponse:
        return await self._admin.EnqueueJob(request, metadata=self._metadata, timeout=self._timeout)

    async def get_job(self, job_id: str) -> job_pb2.Job:
        return await self._admin.GetJob(
            pb.GetJobRequest(job_id=job_id), metadata=self._metadata, timeout=self._timeout
        )

    async def list_jobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        return await self._admin.ListJobs(request, metadata=self._metadata, timeout=self._timeout)

    async def cancel(self, job_id: str) -> pb.CancelJobResponse:
        return await self._admin.CancelJob(
            pb.CancelJobRequest(job_id=job_id), metadata=self._metadata, timeout=self._timeout
        )

    async def retry(self, job_id: str) -> job_pb2.Job:
        return await self._admin.RetryJob(
            pb.RetryJobRequest(job_id=job_id), metadata=self._metadata, timeout=self._timeout
        )

    async def stats(self) -> pb.QueueStats:
        return await self._admin.GetQueueStats(
            pb.GetQueueStatsRequest(), metadata=self._metadata, timeout=self._timeout
        )

    async def serving_status(self) -> str:
        """SERVING, NOT_SERVING, ... for the AdminService; UNREACHABLE when the call fails."""
        try:
            answer = await self._health.Check(
                health_pb2.HealthCheckRequest(service=ADMIN_SERVICE),
                timeout=min(self._timeout, HEALTH_TIMEOUT_SECONDS),
            )
        except grpc.aio.AioRpcError:
            return "UNREACHABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
