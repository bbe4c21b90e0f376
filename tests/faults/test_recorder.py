"""The recording proxy is transparent: calls through it get what the queue service answers
(codes, ErrorInfo, metadata, streams), and it writes down claims, writes and their outcomes,
and loses an answer only when told to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import struct_pb2

from jobqueue import rpc
from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import admin_service_pb2_grpc, advert_service_pb2_grpc, queue_service_pb2_grpc
from jobqueue.v1 import advert_service_pb2 as advert_pb
from jobqueue.v1 import queue_service_pb2 as pb
from queue_service.config import Config
from tests.faults.recorder import RecordingProxy
from tests.support.grpc_server import running_queue, service_config

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TOKEN = "recorder-token"


@pytest.fixture
async def proxied(database_url: str) -> AsyncIterator[tuple[RecordingProxy, grpc.aio.Channel]]:
    config: Config = service_config(database_url, auth_token=TOKEN)
    async with running_queue(config) as qs:
        proxy = RecordingProxy(qs.target)
        await proxy.start()
        channel = rpc.open_channel(proxy.target)
        try:
            yield proxy, channel
        finally:
            await channel.close(None)
            await proxy.stop()


async def test_calls_through_the_proxy_get_the_services_answers_and_are_recorded(
    proxied: tuple[RecordingProxy, grpc.aio.Channel],
) -> None:
    proxy, channel = proxied
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    queue = queue_service_pb2_grpc.QueueServiceStub(channel)
    metadata = rpc.bearer_metadata(TOKEN)

    # The bearer token goes through: without it the service refuses, and says so.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.GetQueueStats(admin_pb.GetQueueStatsRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    job_input = struct_pb2.Struct()
    job_input.update({"source_type": "s3", "s3_key": "videos/recorded.mp4"})
    enqueued = await admin.EnqueueJob(
        admin_pb.EnqueueJobRequest(input=job_input), metadata=metadata
    )
    job_id = enqueued.job.id
    claimed = await queue.Claim(
        pb.ClaimRequest(worker_id="w-rec", max_jobs=1, queue="default"), metadata=metadata
    )
    assert [job.id for job in claimed.jobs] == [job_id]

    # A heartbeat stream, both ways.
    call = queue.Heartbeat(metadata=metadata)
    await call.write(pb.HeartbeatRequest(beats=[pb.JobBeat(job_id=job_id, lease=1, stage="x")]))
    answer = await call.read()
    assert [a.action for a in answer.beats] == [pb.HEARTBEAT_ACTION_CONTINUE]
    await call.write(pb.HeartbeatRequest(beats=[pb.JobBeat(job_id=job_id, lease=9)]))
    answer = await call.read()
    assert [a.action for a in answer.beats] == [pb.HEARTBEAT_ACTION_LEASE_LOST]
    await call.done_writing()

    # An advert under the lease, and one under a lease never given out.
    adverts = advert_service_pb2_grpc.AdvertServiceStub(channel)
    advert = advert_pb.Advert(source_key="fault:recorded", job_id=job_id)
    stored = await adverts.StoreAdvert(
        advert_pb.StoreAdvertRequest(advert=advert, job_id=job_id, lease=1), metadata=metadata
    )
    assert stored.ad_id
    with pytest.raises(grpc.aio.AioRpcError) as fenced:
        await adverts.StoreAdvert(
            advert_pb.StoreAdvertRequest(advert=advert, job_id=job_id, lease=9), metadata=metadata
        )
    assert fenced.value.code() == grpc.StatusCode.ABORTED

    # A stale Complete: ABORTED with its ErrorInfo reason, as the service sends it.
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await queue.Complete(pb.CompleteRequest(job_id=job_id, lease=9), metadata=metadata)
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert rpc.error_reason(stale.value) == "LEASE_LOST"

    # An answer lost on purpose: the Complete is carried out, the caller hears UNAVAILABLE.
    proxy.drop_answers("CompleteBatch")
    batch = pb.CompleteBatchRequest(entries=[pb.CompleteRequest(job_id=job_id, lease=1)])
    with pytest.raises(grpc.aio.AioRpcError) as dropped:
        await queue.CompleteBatch(batch, metadata=metadata)
    assert dropped.value.code() == grpc.StatusCode.UNAVAILABLE
    repeated = await queue.CompleteBatch(batch, metadata=metadata)
    assert [r.outcome for r in repeated.results] == [pb.OUTCOME_OK]

    assert [(c.job_id, c.lease, c.worker) for c in proxy.claims] == [(job_id, 1, "w-rec")]
    assert [(w.kind, w.lease, w.outcome) for w in proxy.writes] == [
        ("heartbeat", 1, "ok"),
        ("heartbeat", 9, "rejected"),
        ("advert", 1, "ok"),
        ("advert", 9, "rejected"),
        ("complete", 9, "rejected"),
        ("complete", 1, "lost"),
        ("complete", 1, "ok"),
    ]
    assert proxy.dropped == ["CompleteBatch"]
