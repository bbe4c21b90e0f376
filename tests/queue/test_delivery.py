"""A Claim delivers what it claimed, or settles it at once: a row that no client could read is
failed for good without stranding the others of its batch, and an answer stays under a byte
budget, the jobs it had no room for handed back unspent. Pages that hold such a row still read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
import pytest
from psycopg import sql

from jobqueue.rpc import struct_to_dict
from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import job_pb2, queue_service_pb2_grpc
from jobqueue.v1 import queue_service_pb2 as queue_pb
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


# -- times beyond what a client reads -------------------------------------------------------------
# PostgreSQL holds 'infinity', '-infinity' and years before 1 or after 9999; Python's datetime and
# protobuf's Timestamp do not. Such a value once failed the whole answer that held it.

FIRST = datetime(1, 1, 1, tzinfo=UTC)
LAST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def insert_timed(
    db: psycopg.Connection[Any],
    key: str,
    status: str = "QUEUED",
    queue: str = "default",
    **times: str,
) -> Any:
    """A job as an operator writes it from psql, with any times (PostgreSQL's text for them)."""
    values: dict[str, Any] = {"idempotency_key": key, "status": status, "queue": queue}
    if status == "RUNNING":
        values.update(locked_by="w", lease=1, attempts=1)
        times.setdefault("locked_at", "now")
    placeholders = [sql.Placeholder(column) for column in values] + [
        sql.SQL("{}::timestamptz").format(sql.Placeholder(column)) for column in times
    ]
    query = sql.SQL(
        'INSERT INTO ingestion_jobs (input, {}) VALUES (\'{{"source_type": "s3"}}\', {})'
        " RETURNING id"
    ).format(
        sql.SQL(", ").join(map(sql.Identifier, [*values, *times])),
        sql.SQL(", ").join(placeholders),
    )
    row = db.execute(query, {**values, **times}).fetchone()
    assert row is not None
    return row[0]


async def test_a_job_due_since_minus_infinity_is_claimed_with_its_batch_and_completes(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    good = insert_job(db)["id"]
    bad = insert_timed(db, "minus-inf", run_after="-infinity", created_at="20000-01-01")
    answer = await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=5))
    # Both delivered; the odd one's times shown as the nearest a client can read.
    assert {job.id for job in answer.jobs} == {str(bad), str(good)}
    [first] = [job for job in answer.jobs if job.id == str(bad)]
    assert first.run_after.ToDatetime(tzinfo=UTC) == FIRST
    assert first.created_at.ToDatetime(tzinfo=UTC) == LAST
    for job in answer.jobs:
        done = await qs.queue.Complete(queue_pb.CompleteRequest(job_id=job.id, lease=job.lease))
        assert done.job.status == job_pb2.JOB_STATUS_SUCCEEDED
    # The claim made the stored run_after readable; created_at is kept as it was.
    row = db.execute(
        "SELECT status, run_after = '0001-01-01 00:00:00+00', created_at::text"
        " FROM ingestion_jobs WHERE id = %s",
        (bad,),
    ).fetchone()
    assert row == ("SUCCEEDED", True, "20000-01-01 00:00:00+00")


async def test_pages_stats_cancel_and_the_sweep_read_times_beyond_a_clients_range(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    parked = insert_timed(db, "parked", run_after="infinity", created_at="-infinity")
    ancient = insert_timed(db, "ancient", run_after="4000-01-01 BC")
    silent = insert_timed(
        db,
        "silent",
        status="RUNNING",
        last_heartbeat_at="-infinity",
        processing_started_at="infinity",
    )
    insert_job(db)
    page = await qs.admin.ListJobs(admin_pb.ListJobsRequest(page_size=2))
    seen = [job.id for job in page.jobs]
    while page.next_page_token:
        page = await qs.admin.ListJobs(
            admin_pb.ListJobsRequest(page_size=2, page_token=page.next_page_token)
        )
        seen += [job.id for job in page.jobs]
    assert len(seen) == len(set(seen)) == 4
    assert seen[-1] == str(parked)  # created at '-infinity': the oldest
    shown = await qs.admin.GetJob(admin_pb.GetJobRequest(job_id=str(parked)))
    assert shown.run_after.ToDatetime(tzinfo=UTC) == LAST
    assert shown.created_at.ToDatetime(tzinfo=UTC) == FIRST
    running = await qs.admin.ListRunningJobs(admin_pb.ListRunningJobsRequest())
    [entry] = running.jobs
    assert entry.job.last_heartbeat_at.ToDatetime(tzinfo=UTC) == FIRST
    assert entry.job.processing_started_at.ToDatetime(tzinfo=UTC) == LAST
    stats = await qs.admin.GetQueueStats(admin_pb.GetQueueStatsRequest())
    assert stats.stale_running == 1
    # The ancient job is the oldest runnable, due since year 1 as far as a client can tell.
    assert stats.oldest_runnable_age_seconds > 2_000 * 365 * 86_400
    cancelled = await qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id=str(parked)))
    assert cancelled.job.status == job_pb2.JOB_STATUS_CANCELLED
    released = await qs.admin.ReleaseStaleJobs(admin_pb.ReleaseStaleJobsRequest())
    assert [job.job_id for job in released.jobs] == [str(silent)]
    statuses = dict(db.execute("SELECT id, status FROM ingestion_jobs").fetchall())
    assert (statuses[silent], statuses[ancient]) == ("RETRY", "QUEUED")


async def test_a_queue_whose_only_later_job_is_parked_at_infinity_has_nothing_due(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    insert_timed(db, "parked", run_after="infinity")
    insert_timed(db, "later", queue="media", run_after="2999-01-01")
    due = await qs.service.store.next_due(["default", "media"])
    assert set(due) == {"media"} and due["media"] > 900 * 365 * 86_400
