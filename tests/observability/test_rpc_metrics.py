"""The queue service's RPC latency by method and status code, and its open heartbeat streams,
scraped from its own endpoint while an in-process service answers real calls."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import queue_service_pb2 as queue_pb
from tests.support.grpc_server import RunningQueue, running_queue, service_config

pytestmark = pytest.mark.integration

RPC = "jobqueue_rpc_duration_seconds_count"


@pytest.fixture
async def observed(database_url: str) -> AsyncIterator[RunningQueue]:
    async with running_queue(service_config(database_url, metrics_listen="127.0.0.1:0")) as qs:
        yield qs


async def scrape(qs: RunningQueue) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    assert qs.service.metrics is not None
    url = f"http://127.0.0.1:{qs.service.metrics.port}/metrics"

    def read() -> str:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.read().decode()

    text = await asyncio.to_thread(read)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def calls(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], method: str, code: str
) -> float:
    key = frozenset({("method", f"jobqueue.v1.{method}"), ("code", code)})
    return samples.get((RPC, key), 0.0)


async def test_each_call_is_timed_by_method_and_code(observed: RunningQueue) -> None:
    before = await scrape(observed)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await observed.admin.GetJob(admin_pb.GetJobRequest(job_id=str(uuid.uuid4())))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await observed.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=0))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await observed.admin.GetQueueStats(admin_pb.GetQueueStatsRequest())

    after = await scrape(observed)
    for method, code in (
        ("AdminService/GetJob", "NOT_FOUND"),
        ("QueueService/Claim", "INVALID_ARGUMENT"),
        ("AdminService/GetQueueStats", "OK"),
    ):
        assert calls(after, method, code) - calls(before, method, code) == 1, (method, code)


async def test_open_heartbeat_streams_are_counted(observed: RunningQueue) -> None:
    gauge = ("jobqueue_heartbeat_streams_active", frozenset())
    base = (await scrape(observed))[gauge]
    requests: asyncio.Queue[queue_pb.HeartbeatRequest | None] = asyncio.Queue()

    async def beats() -> AsyncIterator[queue_pb.HeartbeatRequest]:
        while (request := await requests.get()) is not None:
            yield request

    stream = observed.queue.Heartbeat(beats())
    # A beat for a job that does not exist: answered lease_lost, which proves the stream is open.
    await requests.put(queue_pb.HeartbeatRequest(job_id=str(uuid.uuid4()), lease=1))
    answer = await stream.read()
    assert answer.action == queue_pb.HEARTBEAT_ACTION_LEASE_LOST
    assert (await scrape(observed))[gauge] == base + 1
    await requests.put(None)
    assert await stream.read() == grpc.aio.EOF
    assert (await scrape(observed))[gauge] == base
