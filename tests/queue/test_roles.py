"""Per-role credentials over a real loopback server: who may call what, and every refusal."""

from __future__ import annotations

from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from jobqueue.rpc import bearer_metadata
from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import advert_service_pb2, queue_service_pb2
from tests.support.grpc_server import RunningQueue, running_queue, service_config
from tests.support.jobs import insert_job

pytestmark = pytest.mark.integration

WORKER_TOKEN = "worker-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
SHARED_TOKEN = "shared-token"
WORKER = bearer_metadata(WORKER_TOKEN)
ADMIN = bearer_metadata(ADMIN_TOKEN)

SERVICES = [
    pb.DESCRIPTOR.services_by_name[name]
    for pb, name in (
        (queue_service_pb2, "QueueService"),
        (admin_pb, "AdminService"),
        (advert_service_pb2, "AdvertService"),
    )
]
EVERY_METHOD = [method for service in SERVICES for method in service.methods]


async def call(
    channel: grpc.aio.Channel, method: Any, metadata: tuple[tuple[str, str], ...]
) -> grpc.StatusCode:
    """Call any RPC with an empty request; the status code it ends with."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    kwargs: dict[str, Any] = {
        "request_serializer": request_class.SerializeToString,
        "response_deserializer": response_class.FromString,
    }
    try:
        if method.client_streaming:
            stream = channel.stream_stream(path, **kwargs)(
                iter([request_class()]), metadata=metadata, timeout=5
            )
            async for _ in stream:
                pass
        else:
            await channel.unary_unary(path, **kwargs)(request_class(), metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def count_jobs(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM ingestion_jobs").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def roles(database_url: str) -> Any:
    config = service_config(database_url, worker_token=WORKER_TOKEN, admin_token=ADMIN_TOKEN)
    async with running_queue(config) as running:
        yield running


@pytest.mark.parametrize("method", EVERY_METHOD, ids=lambda method: method.full_name)
async def test_no_or_a_wrong_credential_is_unauthenticated_everywhere(
    roles: RunningQueue, method: Any
) -> None:
    assert await call(roles.channel, method, ()) == grpc.StatusCode.UNAUTHENTICATED
    wrong = bearer_metadata("not-the-token-at-all")
    assert await call(roles.channel, method, wrong) == grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_stay_open(roles: RunningQueue) -> None:
    health = health_pb2_grpc.HealthStub(roles.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(roles.channel)
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = [
        service.name
        async for answer in answers
        for service in answer.list_services_response.service
    ]
    assert "jobqueue.v1.AdminService" in names


@pytest.mark.parametrize(
    "name",
    [
        "EnqueueJob",
        "EnqueueJobs",
        "ListJobs",
        "CancelJob",
        "RetryJob",
        "ListRunningJobs",
        "ReleaseStaleJobs",
    ],
)
async def test_a_worker_credential_is_denied_the_admin_service(
    roles: RunningQueue, database_url: str, name: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        job = insert_job(conn, status="FAILED")
    method = SERVICES[1].methods_by_name[name]
    assert await call(roles.channel, method, WORKER) == grpc.StatusCode.PERMISSION_DENIED
    # Not even a job that a real request would have touched: the refusal comes first.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await roles.admin.RetryJob(admin_pb.RetryJobRequest(job_id=str(job["id"])), metadata=WORKER)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as enqueue:
        request = admin_pb.EnqueueJobRequest()
        request.input.update({"source_type": "s3", "s3_key": "videos/x.mp4"})
        await roles.admin.EnqueueJob(request, metadata=WORKER)
    assert enqueue.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert count_jobs(database_url) == 1


async def test_a_worker_may_read_a_job_and_the_stats(roles: RunningQueue) -> None:
    stats = await roles.admin.GetQueueStats(admin_pb.GetQueueStatsRequest(), metadata=WORKER)
    assert stats.total == 0


@pytest.mark.parametrize("name", ["Claim", "Heartbeat", "Complete", "Fail", "Release"])
async def test_an_admin_credential_cannot_act_as_a_worker(roles: RunningQueue, name: str) -> None:
    method = SERVICES[0].methods_by_name[name]
    assert await call(roles.channel, method, ADMIN) == grpc.StatusCode.PERMISSION_DENIED


async def test_an_admin_cannot_store_an_advert_but_reads_them(roles: RunningQueue) -> None:
    store = SERVICES[2].methods_by_name["StoreAdvert"]
    assert await call(roles.channel, store, ADMIN) == grpc.StatusCode.PERMISSION_DENIED
    read = SERVICES[2].methods_by_name["GetAdvert"]
    assert await call(roles.channel, read, WORKER) == grpc.StatusCode.PERMISSION_DENIED
    # Admitted: an empty ad_id is the request's fault, not the credential's.
    assert await call(roles.channel, read, ADMIN) == grpc.StatusCode.INVALID_ARGUMENT


async def test_roles_are_admitted_to_their_own_rpcs(roles: RunningQueue, database_url: str) -> None:
    request = admin_pb.EnqueueJobRequest()
    request.input.update({"source_type": "s3", "s3_key": "videos/roles.mp4"})
    enqueued = await roles.admin.EnqueueJob(request, metadata=ADMIN)
    claimed = await roles.queue.Claim(
        queue_service_pb2.ClaimRequest(worker_id="w1", max_jobs=1), metadata=WORKER
    )
    assert [job.id for job in claimed.jobs] == [enqueued.job.id]


async def test_the_shared_token_keeps_both_roles(database_url: str) -> None:
    config = service_config(
        database_url,
        auth_token=SHARED_TOKEN,
        worker_token=WORKER_TOKEN,
        admin_token=ADMIN_TOKEN,
    )
    async with running_queue(config) as running:
        shared = bearer_metadata(SHARED_TOKEN)
        request = admin_pb.EnqueueJobRequest()
        request.input.update({"source_type": "s3", "s3_key": "videos/shared.mp4"})
        await running.admin.EnqueueJob(request, metadata=shared)
        claimed = await running.queue.Claim(
            queue_service_pb2.ClaimRequest(worker_id="w1", max_jobs=1), metadata=shared
        )
        assert len(claimed.jobs) == 1
