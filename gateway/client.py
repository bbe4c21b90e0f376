"""The gateway's only way to the queue service: AdminService, AdvertService (reads) and
grpc.health.v1 calls, each with the bearer token and a deadline.

Putting every call behind this class is what guarantees "every gRPC call has a deadline": a hung
queue service costs a request at most GATEWAY_GRPC_TIMEOUT_SECONDS (then 504), never a stuck
worker thread or an HTTP request open forever. Calls do not wait for the channel to become ready,
so a queue service that is down is reported at once (503), not after the deadline.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobqueue.rpc import bearer_metadata
from jobqueue.v1 import admin_service_pb2 as pb
from jobqueue.v1 import admin_service_pb2_grpc, advert_service_pb2, advert_service_pb2_grpc, job_pb2

ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
# /healthz answers probes that have short timeouts of their own.
HEALTH_TIMEOUT_SECONDS = 3.0


class QueueClient:
    def __init__(self, channel: grpc.aio.Channel, *, token: str | None, timeout: float) -> None:
        self._admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        self._adverts = advert_service_pb2_grpc.AdvertServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        self._token = token
        self._metadata = bearer_metadata(token)
        self._timeout = timeout

    def _as(self, operator: str | None) -> tuple[tuple[str, str], ...]:
        """The metadata of an audited call: the token, and who is behind it."""
        return bearer_metadata(self._token, operator)

    async def enqueue(
        self, request: pb.EnqueueJobRequest, operator: str | None = None
    ) -> pb.EnqueueJobResponse:
        return await self._admin.EnqueueJob(
            request, metadata=self._as(operator), timeout=self._timeout
        )

    async def get_job(self, job_id: str) -> job_pb2.Job:
        return await self._admin.GetJob(
            pb.GetJobRequest(job_id=job_id), metadata=self._metadata, timeout=self._timeout
        )

    async def list_jobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        return await self._admin.ListJobs(request, metadata=self._metadata, timeout=self._timeout)

    async def cancel(self, job_id: str, operator: str | None = None) -> pb.CancelJobResponse:
        return await self._admin.CancelJob(
            pb.CancelJobRequest(job_id=job_id), metadata=self._as(operator), timeout=self._timeout
        )

    async def retry(self, job_id: str, operator: str | None = None) -> job_pb2.Job:
        return await self._admin.RetryJob(
            pb.RetryJobRequest(job_id=job_id), metadata=self._as(operator), timeout=self._timeout
        )

    async def stats(self) -> pb.QueueStats:
        return await self._admin.GetQueueStats(
            pb.GetQueueStatsRequest(), metadata=self._metadata, timeout=self._timeout
        )

    async def running_jobs(self, request: pb.ListRunningJobsRequest) -> pb.ListRunningJobsResponse:
        return await self._admin.ListRunningJobs(
            request, metadata=self._metadata, timeout=self._timeout
        )

    async def get_advert(self, ad_id: str) -> advert_service_pb2.Advert:
        return await self._adverts.GetAdvert(
            advert_service_pb2.GetAdvertRequest(ad_id=ad_id),
            metadata=self._metadata,
            timeout=self._timeout,
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
