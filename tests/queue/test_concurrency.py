"""Concurrency claims proved by running many claimers at once, not by reasoning."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
import psycopg
import pytest

from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import queue_service_pb2 as queue_pb
from jobqueue.v1 import queue_service_pb2_grpc
from tests.support.grpc_server import RunningQueue

pytestmark = pytest.mark.integration

JOBS = 2000
CLAIMERS = 8


async def test_eight_concurrent_claimers_claim_each_of_2000_jobs_exactly_once(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    db.execute(
        """
        SELECT enqueue_jobs(array_agg(jsonb_build_object('s3_key', 'videos/' || i || '.mp4')),
                            array_fill('default'::text, ARRAY[%(n)s]), array_fill(0, ARRAY[%(n)s]),
                            array_fill(0, ARRAY[%(n)s]), array_fill(''::text, ARRAY[%(n)s]),
                            array_fill(NULL::timestamptz, ARRAY[%(n)s]))
        FROM generate_series(1, %(n)s) i
        """,
        {"n": JOBS},
    )
    claimed_by: dict[str, list[str]] = {}

    async def claimer(name: str) -> None:
        # Each claimer has its own connection, as separate worker processes would.
        async with grpc.aio.insecure_channel(qs.target) as channel:
            stub = queue_service_pb2_grpc.QueueServiceStub(channel)
            mine = claimed_by.setdefault(name, [])
            while True:
                response = await stub.Claim(queue_pb.ClaimRequest(worker_id=name, max_jobs=7))
                if not response.jobs:
                    return
                mine.extend(job.id for job in response.jobs)
                # Finish them in one batch, as a worker with concurrency would.
                await stub.CompleteBatch(
                    queue_pb.CompleteBatchRequest(
                        entries=[
                            queue_pb.CompleteRequest(job_id=j.id, lease=j.lease)
                            for j in response.jobs
                        ]
                    )
                )

    await asyncio.gather(*(claimer(f"claimer-{i}") for i in range(CLAIMERS)))

    counts = Counter(job_id for ids in claimed_by.values() for job_id in ids)
    assert len(counts) == JOBS
    assert set(counts.values()) == {1}, "a job was claimed twice"
    # Everyone got work: the claims interleaved rather than one claimer draining the queue.
    assert sum(1 for ids in claimed_by.values() if ids) >= 2
    rows = db.execute(
        "SELECT status, attempts, count(*) FROM ingestion_jobs GROUP BY status, attempts"
    ).fetchall()
    assert rows == [("SUCCEEDED", 1, JOBS)]
    by_worker = dict(
        db.execute("SELECT locked_by, count(*) FROM ingestion_jobs GROUP BY locked_by").fetchall()
    )
    assert by_worker == {name: len(ids) for name, ids in claimed_by.items() if ids}


async def test_concurrent_single_completions_are_coalesced_and_each_answered(
    qs: RunningQueue,
) -> None:
    await qs.admin.EnqueueJobs(
        admin_pb.EnqueueJobsRequest(
            jobs=[
                admin_pb.EnqueueJobRequest(
                    input=_struct({"source_type": "s3", "s3_key": f"v/{i}.mp4"})
                )
                for i in range(200)
            ]
        )
    )
    jobs = list((await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=200))).jobs)
    assert len(jobs) == 200
    flushes = 0
    original = qs.service.queue.completions._flush

    async def counting_flush(batch: Any) -> Any:
        nonlocal flushes
        flushes += 1
        return await original(batch)

    qs.service.queue.completions._flush = counting_flush
    responses = await asyncio.gather(
        *(qs.queue.Complete(queue_pb.CompleteRequest(job_id=j.id, lease=j.lease)) for j in jobs)
    )
    assert {r.job.id for r in responses} == {j.id for j in jobs}
    # Calls that arrived while a statement was in flight shared the next one. (How many share
    # depends on timing; tests/queue/test_batching.py pins the mechanism down exactly.)
    assert flushes < len(jobs), flushes


def _struct(value: dict[str, Any]) -> Any:
    from google.protobuf import struct_pb2

    message = struct_pb2.Struct()
    message.update(value)
    return message
