"""A Claim delivers what it claimed, or settles it at once: a row that no client could read is
failed for good without stranding the others of its batch, and an answer stays under a byte
budget, the jobs it had no room for handed back unspent. Pages that hold such a row still read."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import psycopg
import pytest

from jobqueue.rpc import struct_to_dict
from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import queue_service_pb2 as queue_pb
from jobqueue.v1 import queue_service_pb2_grpc
from queue_service.queue import MAX_CLAIM_ANSWER_BYTES, UNDELIVERABLE_CODE
from tests.support.grpc_server import RunningQueue
from tests.support.jobs import fetch_job, insert_job

pytestmark = pytest.mark.integration


def insert_raw(db: psycopg.Connection[Any], input_json: str, key: str, age: float = 0) -> Any:
    """A job as an operator writes it from psql: the input is whatever jsonb accepts."""
    row = db.execute(
        "INSERT INTO ingestion_jobs (input, idempotency_key, created_at, run_after)"
        " VALUES (%s::jsonb, %s, now() - make_interval(secs => %s),"
        " now() - make_interval(secs => %s)) RETURNING id",
        (input_json, key, age, age),
    ).fetchone()
    assert row is not None
    return row[0]


async def test_a_row_that_cannot_be_converted_fails_alone_and_its_batch_is_delivered(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    bad = insert_raw(db, '{"frames": 1e400}', "bad", age=2)
    deep = insert_raw(db, '{"x": ' + '{"a": ' * 33 + "1" + "}" * 33 + "}", "deep", age=1)
    good = insert_job(db)["id"]
    # The client's own decoding is part of the proof: a row it could not read fails it here.
    answer = await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=5))
    assert [job.id for job in answer.jobs] == [str(good)]
    assert fetch_job(db, good)["status"] == "RUNNING"
    for job_id, what in ((bad, "a number beyond a double's range"), (deep, "nested deeper")):
        row = fetch_job(db, job_id)
        assert (row["status"], row["error_code"], row["attempts"]) == (
            "FAILED",
            UNDELIVERABLE_CODE,
            1,
        )
        assert what in row["last_error"]
        assert row["errors"][-1]["code"] == UNDELIVERABLE_CODE
    # Nothing is left for a later claim to trip over.
    again = await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=5))
    assert not again.jobs


async def test_pages_that_hold_such_a_row_show_the_bad_field_as_a_string(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    bad = insert_raw(db, '{"source_type": "s3", "s3_key": "a.mp4", "frames": 1e400}', "bad")
    insert_job(db)
    page = await qs.admin.ListJobs(admin_pb.ListJobsRequest())
    assert len(page.jobs) == 2
    job = await qs.admin.GetJob(admin_pb.GetJobRequest(job_id=str(bad)))
    shown = struct_to_dict(job.input)
    assert shown["frames"] == "1" + "0" * 400
    assert shown["s3_key"] == "a.mp4"


async def test_an_answer_stays_under_its_budget_and_the_rest_is_handed_back_unspent(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # 140 jobs of 250 KB each: 35 MB if answered whole.
    db.execute(
        "INSERT INTO ingestion_jobs (input, idempotency_key, created_at)"
        " SELECT jsonb_build_object('source_type', 's3', 's3_key', 'k' || g,"
        "                           'blob', repeat('x', 250000)),"
        "        'big' || g, now() - make_interval(secs => 200 - g)"
        " FROM generate_series(1, 140) g"
    )
    # A client with gRPC's default 4 MiB receive limit reads it.
    async with grpc.aio.insecure_channel(qs.target) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        answer = await stub.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=140))
    assert 0 < len(answer.jobs) < 140
    assert answer.ByteSize() <= MAX_CLAIM_ANSWER_BYTES
    delivered = {job.id for job in answer.jobs}
    rows = db.execute(
        "SELECT id::text, status, attempts, lease, run_after <= now() FROM ingestion_jobs"
    ).fetchall()
    handed_back = [row for row in rows if row[0] not in delivered]
    assert len(handed_back) == 140 - len(answer.jobs)
    # QUEUED and due at once, the attempt not counted; the lease of the claim stays dead.
    assert {row[1:] for row in handed_back} == {("QUEUED", 0, 1, True)}
    assert {row[1] for row in rows if row[0] in delivered} == {"RUNNING"}
    stale = handed_back[0][0]
    with pytest.raises(grpc.aio.AioRpcError) as fenced:
        await qs.queue.Complete(queue_pb.CompleteRequest(job_id=stale, lease=1))
    assert fenced.value.code() == grpc.StatusCode.ABORTED
    # The next claim takes them, each under a new lease.
    more = await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w2", max_jobs=140))
    assert more.jobs and {job.lease for job in more.jobs} == {2}
    assert not delivered & {job.id for job in more.jobs}


async def test_a_job_larger_than_a_whole_answer_fails_and_the_others_are_delivered(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    huge = insert_raw(
        db, '{"source_type": "s3", "blob": "' + "x" * (MAX_CLAIM_ANSWER_BYTES + 1) + '"}', "huge", 1
    )
    small = insert_job(db)["id"]
    answer = await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=2))
    assert [job.id for job in answer.jobs] == [str(small)]
    row = fetch_job(db, huge)
    assert (row["status"], row["error_code"]) == ("FAILED", UNDELIVERABLE_CODE)
    assert "more than a claim's whole answer" in row["last_error"]


async def test_a_caller_gone_while_its_answer_is_settled_has_its_jobs_handed_back(
    qs: RunningQueue, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_raw(db, '{"frames": 1e400}', "bad", age=1)
    good = insert_job(db)["id"]
    fail = qs.service.store.fail
    gone = asyncio.Event()

    async def slow_fail(failures: Any) -> Any:
        await gone.wait()  # the failure is written once the caller has gone
        return await fail(failures)

    monkeypatch.setattr(qs.service.store, "fail", slow_fail)
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=2), timeout=1)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    gone.set()

    async def handed_back() -> None:
        while fetch_job(db, good)["status"] != "QUEUED":
            await asyncio.sleep(0.05)

    await asyncio.wait_for(handed_back(), 10)
    assert fetch_job(db, good)["attempts"] == 0
