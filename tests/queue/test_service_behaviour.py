"""The queue service as an operator meets it: auth, health, outages, the reaper."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobqueue.rpc import error_reason
from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import admin_service_pb2_grpc
from tests.support.grpc_server import running_queue, service_config
from tests.support.jobs import fetch_job, insert_job
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def stats_request() -> admin_pb.GetQueueStatsRequest:
    return admin_pb.GetQueueStatsRequest()


async def test_a_token_is_required_when_configured(database_url: str) -> None:
    async with running_queue(service_config(database_url, auth_token="s3cret")) as qs:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await qs.admin.GetQueueStats(stats_request())
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await qs.admin.GetQueueStats(
                stats_request(), metadata=(("authorization", "Bearer nope"),)
            )
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Streams are guarded too.
        call = qs.queue.Heartbeat()
        await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as stream:
            async for _ in call:
                pass
        assert stream.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stats = await qs.admin.GetQueueStats(stats_request(), metadata=qs.metadata)
        assert stats.total == 0
        # Health stays open for load balancers and healthchecks.
        health = health_pb2_grpc.HealthStub(qs.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_database_outage_is_unavailable_and_heals_without_a_restart(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("queue_service.server.HEALTH_CHECK_INTERVAL_SECONDS", 0.2)
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    async with running_queue(service_config(proxied)) as qs:
        health = health_pb2_grpc.HealthStub(qs.channel)
        assert (await qs.admin.GetQueueStats(stats_request())).total == 0

        await proxy.cut()
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await qs.admin.GetQueueStats(stats_request(), timeout=10)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(down.value) == "DATABASE_UNAVAILABLE"
        assert "postgresql://" not in (down.value.details() or "")
        await _until_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)

        await proxy.start()  # the database is back, on the same address
        await _until_health(health, health_pb2.HealthCheckResponse.SERVING)
        input_ = struct_pb2.Struct()
        input_.update({"source_type": "s3", "s3_key": "videos/after-outage.mp4"})
        response = await qs.admin.EnqueueJob(admin_pb.EnqueueJobRequest(input=input_), timeout=10)
        assert not response.already_existed
    await proxy.cut()


async def _until_health(
    health: health_pb2_grpc.HealthStub, wanted: int, within: float = 15.0
) -> None:
    async def poll() -> None:
        while (await health.Check(health_pb2.HealthCheckRequest())).status != wanted:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), within)


async def test_the_reaper_releases_stale_jobs_on_its_own(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    row = insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 600})
    config = service_config(
        database_url,
        stale_sweep_interval_seconds=0.2,
        heartbeat_interval_seconds=0.2,
        stale_sweep_margin_seconds=0.2,
    )
    async with running_queue(config):

        async def released() -> None:
            while fetch_job(db, row["id"])["status"] != "RETRY":
                await asyncio.sleep(0.1)

        await asyncio.wait_for(released(), 10)
    assert fetch_job(db, row["id"])["error_code"] == "HEARTBEAT_TIMEOUT"


async def test_internal_errors_say_nothing_of_the_internals(database_url: str) -> None:
    async with running_queue(service_config(database_url)) as qs:

        async def broken(*_: Any) -> Any:
            raise RuntimeError("password=hunter2 at postgresql://u:hunter2@db/x")

        qs.service.store.get_job = broken  # type: ignore[method-assign]
        stub = admin_service_pb2_grpc.AdminServiceStub(qs.channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetJob(admin_pb.GetJobRequest(job_id="00000000-0000-0000-0000-000000000000"))
        assert caught.value.code() == grpc.StatusCode.INTERNAL
        assert "hunter2" not in (caught.value.details() or "")
