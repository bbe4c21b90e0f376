"""Each rule of the job state machine, through the queue service's gRPC API on a real database."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import duration_pb2, struct_pb2

from jobqueue.rpc import error_reason
from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import job_pb2
from jobqueue.v1 import queue_service_pb2 as queue_pb
from tests.support.grpc_server import RunningQueue
from tests.support.jobs import fetch_job, insert_job

pytestmark = pytest.mark.integration

S = job_pb2.JobStatus


def advert_input(key: str = "videos/test-ad.mp4") -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update({"source_type": "s3", "s3_key": key})
    return message


async def enqueue(qs: RunningQueue, key: str = "videos/test-ad.mp4", **fields: Any) -> job_pb2.Job:
    response = await qs.admin.EnqueueJob(
        admin_pb.EnqueueJobRequest(input=advert_input(key), **fields)
    )
    return response.job


async def claim(
    qs: RunningQueue, n: int = 1, worker: str = "w1", wait: float = 0
) -> list[job_pb2.Job]:
    request = queue_pb.ClaimRequest(worker_id=worker, max_jobs=n)
    if wait:
        request.wait.FromNanoseconds(int(wait * 1e9))
    return list((await qs.queue.Claim(request)).jobs)


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# -- enqueue ----------------------------------------------------------------------------------


async def test_enqueue_creates_a_queued_job_with_the_defaults(qs: RunningQueue) -> None:
    job = await enqueue(qs)
    assert job.status == S.JOB_STATUS_QUEUED
    assert (job.attempts, job.max_attempts, job.lease) == (0, 5, 0)
    assert dict(job.input) == {"source_type": "s3", "s3_key": "videos/test-ad.mp4"}


async def test_enqueue_is_idempotent_on_the_input(qs: RunningQueue) -> None:
    first = await qs.admin.EnqueueJob(admin_pb.EnqueueJobRequest(input=advert_input()))
    # The same input with its keys in another order is the same job.
    reordered = struct_pb2.Struct()
    reordered.update({"s3_key": "videos/test-ad.mp4", "source_type": "s3"})
    second = await qs.admin.EnqueueJob(admin_pb.EnqueueJobRequest(input=reordered))
    assert not first.already_existed
    assert second.already_existed
    assert second.job.id == first.job.id


async def test_enqueue_with_a_caller_key_dedupes_on_the_key(qs: RunningQueue) -> None:
    a = await enqueue(qs, "videos/a.mp4", idempotency_key="batch-7")
    response = await qs.admin.EnqueueJob(
        admin_pb.EnqueueJobRequest(input=advert_input("videos/b.mp4"), idempotency_key="batch-7")
    )
    assert response.already_existed and response.job.id == a.id


async def test_fifty_concurrent_enqueues_of_one_key_make_one_job(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # Separate channels, so the calls really reach the server (and the database) concurrently.
    channels = [grpc.aio.insecure_channel(qs.target) for _ in range(10)]
    try:
        from jobqueue.v1 import admin_service_pb2_grpc

        stubs = [admin_service_pb2_grpc.AdminServiceStub(ch) for ch in channels]
        request = admin_pb.EnqueueJobRequest(input=advert_input("videos/race.mp4"))
        responses = await asyncio.gather(*(stubs[i % 10].EnqueueJob(request) for i in range(50)))
    finally:
        for ch in channels:
            await ch.close()
    assert len({r.job.id for r in responses}) == 1
    assert sum(r.already_existed for r in responses) == 49
    assert db.execute("SELECT count(*) FROM ingestion_jobs").fetchone() == (1,)


async def test_batch_enqueue_reports_each_job_in_order(qs: RunningQueue) -> None:
    existing = await enqueue(qs, "videos/1.mp4")
    response = await qs.admin.EnqueueJobs(
        admin_pb.EnqueueJobsRequest(
            jobs=[
                admin_pb.EnqueueJobRequest(input=advert_input(f"videos/{i}.mp4")) for i in range(3)
            ]
            + [admin_pb.EnqueueJobRequest(input=advert_input("videos/0.mp4"))]
        )
    )
    results = list(response.results)
    assert [r.already_existed for r in results] == [False, True, False, True]
    assert results[1].job.id == existing.id
    assert results[3].job.id == results[0].job.id


@pytest.mark.parametrize(
    ("fields", "reason_field"),
    [
        ({}, "input"),
        ({"input": advert_input(), "max_attempts": 101}, "max_attempts"),
        ({"input": advert_input(), "priority": 5000}, "priority"),
    ],
)
async def test_enqueue_rejects_bad_input(
    qs: RunningQueue, db: psycopg.Connection[Any], fields: dict[str, Any], reason_field: str
) -> None:
    error = await rpc_error(qs.admin.EnqueueJob(admin_pb.EnqueueJobRequest(**fields)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_field in error.details()
    assert db.execute("SELECT count(*) FROM ingestion_jobs").fetchone() == (0,)


# -- claim ------------------------------------------------------------------------------------


async def test_claim_takes_by_priority_then_age_and_starts_a_lease(qs: RunningQueue) -> None:
    old = await enqueue(qs, "videos/old.mp4")
    new = await enqueue(qs, "videos/new.mp4")
    urgent = await enqueue(qs, "videos/urgent.mp4", priority=10)
    jobs = await claim(qs, 2)
    assert {j.id for j in jobs} == {urgent.id, old.id}
    for job in jobs:
        assert (job.status, job.attempts, job.lease, job.stage) == (
            S.JOB_STATUS_RUNNING,
            1,
            1,
            "claimed",
        )
        assert job.locked_by == "w1"
    [last] = await claim(qs, 5)
    assert last.id == new.id
    assert await claim(qs, 5) == []


async def test_claim_takes_retry_jobs_only_once_their_backoff_has_passed(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    waiting = insert_job(db, status="RETRY", attempts=1, seconds_ago={"run_after": -3600})
    due = insert_job(db, status="RETRY", attempts=1, lease=1, seconds_ago={"run_after": 1})
    [job] = await claim(qs, 5)
    assert job.id == str(due["id"])
    assert (job.attempts, job.lease) == (2, 2)
    assert fetch_job(db, waiting["id"])["status"] == "RETRY"


async def test_claim_waits_for_work_and_wakes_on_enqueue(qs: RunningQueue) -> None:
    started = time.monotonic()
    waiting = asyncio.create_task(claim(qs, 1, wait=20))
    await asyncio.sleep(0.3)  # let the claim find nothing and start waiting
    assert not waiting.done()
    job = await enqueue(qs)
    [claimed] = await asyncio.wait_for(waiting, 10)
    assert claimed.id == job.id
    # Woken by the notification, not by the 20 s wait running out.
    assert time.monotonic() - started < 5


async def test_claim_wait_ends_empty_at_its_limit(qs: RunningQueue) -> None:
    started = time.monotonic()
    assert await claim(qs, 1, wait=0.5) == []
    assert 0.4 < time.monotonic() - started < 5


@pytest.mark.parametrize(
    "request_fields",
    [
        {"worker_id": "", "max_jobs": 1},
        {"worker_id": "w", "max_jobs": 0},
        {"worker_id": "w", "max_jobs": 1001},
    ],
)
async def test_claim_rejects_bad_requests(qs: RunningQueue, request_fields: dict[str, Any]) -> None:
    error = await rpc_error(qs.queue.Claim(queue_pb.ClaimRequest(**request_fields)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- heartbeat --------------------------------------------------------------------------------


async def beat(
    qs: RunningQueue, *beats: queue_pb.HeartbeatRequest
) -> list[queue_pb.HeartbeatResponse]:
    call = qs.queue.Heartbeat()
    for request in beats:
        await call.write(request)
    await call.done_writing()
    return [response async for response in call]


async def test_heartbeat_records_stage_and_progress(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    await enqueue(qs)
    [job] = await claim(qs)
    before = fetch_job(db, job.id)["last_heartbeat_at"]
    [answer] = await beat(
        qs,
        queue_pb.HeartbeatRequest(
            job_id=job.id, lease=job.lease, stage="transcription", progress=0.4
        ),
    )
    assert answer.action == queue_pb.HEARTBEAT_ACTION_CONTINUE
    row = fetch_job(db, job.id)
    assert (row["stage"], row["progress"]) == ("transcription", 0.4)
    assert row["last_heartbeat_at"] > before


async def test_heartbeat_answers_each_job_of_a_stream(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    for i in range(3):
        await enqueue(qs, f"videos/{i}.mp4")
    jobs = await claim(qs, 3)
    cancelled = jobs[1]
    await qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id=cancelled.id))
    answers = await beat(
        qs,
        *(
            queue_pb.HeartbeatRequest(job_id=j.id, lease=j.lease, stage="keyframes", progress=0.5)
            for j in jobs
        ),
        queue_pb.HeartbeatRequest(job_id=jobs[2].id, lease=jobs[2].lease + 1, progress=0.1),
    )
    actions = {(a.job_id, a.lease): a.action for a in answers}
    assert actions[(jobs[0].id, jobs[0].lease)] == queue_pb.HEARTBEAT_ACTION_CONTINUE
    assert actions[(cancelled.id, cancelled.lease)] == queue_pb.HEARTBEAT_ACTION_CANCEL
    assert actions[(jobs[2].id, jobs[2].lease + 1)] == queue_pb.HEARTBEAT_ACTION_LEASE_LOST
    # The stale-lease beat changed nothing.
    assert fetch_job(db, jobs[2].id)["progress"] == 0.5


async def test_a_malformed_single_beat_is_refused_alone_and_the_stream_goes_on(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # The single-beat form (job_id at the top level, as grpcurl users send it): each malformed
    # beat gets INVALID with the reason; the well-formed beats around it are written and answered.
    await enqueue(qs)
    [job] = await claim(qs)
    answers = await beat(
        qs,
        queue_pb.HeartbeatRequest(job_id="nope", lease=1),
        queue_pb.HeartbeatRequest(job_id=job.id, lease=job.lease, stage="x" * 113),
        queue_pb.HeartbeatRequest(job_id=job.id, lease=job.lease, progress=2.0),
        queue_pb.HeartbeatRequest(job_id=job.id, lease=0),
        queue_pb.HeartbeatRequest(job_id=job.id, lease=job.lease, stage="keyframes", progress=0.3),
    )
    assert [(a.action, a.message) for a in answers] == [
        (queue_pb.HEARTBEAT_ACTION_INVALID, "job_id must be a UUID, got 'nope'"),
        (queue_pb.HEARTBEAT_ACTION_INVALID, "stage is at most 100 printable characters"),
        (queue_pb.HEARTBEAT_ACTION_INVALID, "progress must be 0..1"),
        (queue_pb.HEARTBEAT_ACTION_INVALID, "lease must be the positive lease of a claim"),
        (queue_pb.HEARTBEAT_ACTION_CONTINUE, ""),
    ]
    assert [(a.job_id, a.lease) for a in answers][1:3] == [(job.id, job.lease)] * 2
    row = fetch_job(db, job.id)
    assert (row["stage"], row["progress"]) == ("keyframes", 0.3)


# -- complete ---------------------------------------------------------------------------------


async def test_complete_stores_the_output(qs: RunningQueue, db: psycopg.Connection[Any]) -> None:
    await enqueue(qs)
    [job] = await claim(qs)
    output = struct_pb2.Struct()
    output.update({"ad_id": "ad-1"})
    done = (
        await qs.queue.Complete(
            queue_pb.CompleteRequest(job_id=job.id, lease=job.lease, output=output)
        )
    ).job
    assert done.status == S.JOB_STATUS_SUCCEEDED
    assert dict(done.output) == {"ad_id": "ad-1"}
    row = fetch_job(db, job.id)
    assert (row["stage"], row["progress"]) == ("succeeded", 1.0)
    assert row["completed_at"] is not None and row["processing_completed_at"] is not None
    assert row["locked_by"] == "w1"  # kept: operators read who ran it


async def test_complete_with_a_lease_that_is_not_current_is_rejected(qs: RunningQueue) -> None:
    await enqueue(qs)
    [job] = await claim(qs)
    error = await rpc_error(
        qs.queue.Complete(queue_pb.CompleteRequest(job_id=job.id, lease=job.lease + 1))
    )
    assert error.code() == grpc.StatusCode.ABORTED
    assert error_reason(error) == "LEASE_LOST"


async def test_complete_of_an_unknown_job_is_not_found(qs: RunningQueue) -> None:
    error = await rpc_error(
        qs.queue.Complete(
            queue_pb.CompleteRequest(job_id="00000000-0000-0000-0000-000000000000", lease=1)
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_complete_batch_gives_each_entry_its_outcome(qs: RunningQueue) -> None:
    for i in range(2):
        await enqueue(qs, f"videos/{i}.mp4")
    a, b = await claim(qs, 2)
    response = await qs.queue.CompleteBatch(
        queue_pb.CompleteBatchRequest(
            entries=[
                queue_pb.CompleteRequest(job_id=a.id, lease=a.lease),
                queue_pb.CompleteRequest(job_id=b.id, lease=b.lease + 5),
                queue_pb.CompleteRequest(job_id="00000000-0000-0000-0000-000000000000", lease=1),
            ]
        )
    )
    assert [(r.outcome, r.status) for r in response.results] == [
        (queue_pb.OUTCOME_OK, S.JOB_STATUS_SUCCEEDED),
        (queue_pb.OUTCOME_LEASE_LOST, S.JOB_STATUS_RUNNING),
        (queue_pb.OUTCOME_NOT_FOUND, S.JOB_STATUS_UNSPECIFIED),
    ]


# -- fail -------------------------------------------------------------------------------------


async def fail(
    qs: RunningQueue,
    job: job_pb2.Job,
    retryable: bool = True,
    code: str = "S3_OBJECT_NOT_FOUND",
    message: str = "no such key",
    retry_after: duration_pb2.Duration | None = None,
) -> job_pb2.Job:
    request = queue_pb.FailRequest(
        job_id=job.id,
        lease=job.lease,
        error_code=code,
        message=message,
        retryable=retryable,
        retry_after=retry_after,
    )
    return (await qs.queue.Fail(request)).job


async def test_a_retryable_failure_backs_off_then_dead_letters_after_max_attempts(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    await enqueue(qs)
    delays = []
    for attempt in range(1, 6):
        # Make the job due now, whatever its backoff, so the test walks every attempt.
        db.execute("UPDATE ingestion_jobs SET run_after = now() WHERE status = 'RETRY'")
        [job] = await claim(qs)
        assert job.attempts == attempt
        failed = await fail(qs, job)
        row = fetch_job(db, job.id)
        if attempt < 5:
            assert failed.status == S.JOB_STATUS_RETRY
            delays.append((row["run_after"] - row["updated_at"]).total_seconds())
        else:
            assert failed.status == S.JOB_STATUS_FAILED
    assert (row["attempts"], row["error_code"], row["last_error"]) == (
        5,
        "S3_OBJECT_NOT_FOUND",
        "no such key",
    )
    assert [e["attempt"] for e in row["errors"]] == [1, 2, 3, 4, 5]
    assert row["completed_at"] is not None
    # base 10 s, doubling, with jitter in [d/2, d]: 5-10, 10-20, 20-40, 40-80.
    for attempt, delay in enumerate(delays, start=1):
        full = 10 * 2 ** (attempt - 1)
        assert full / 2 <= delay <= full, (attempt, delay)
    dead = db.execute("SELECT id FROM dead_letter_jobs").fetchall()
    assert dead == [(row["id"],)]


async def test_a_permanent_failure_fails_at_once(qs: RunningQueue) -> None:
    await enqueue(qs)
    [job] = await claim(qs)
    failed = await fail(qs, job, retryable=False, code="INVALID_INPUT")
    assert (failed.status, failed.attempts, failed.error_code) == (
        S.JOB_STATUS_FAILED,
        1,
        "INVALID_INPUT",
    )


async def test_retry_after_overrides_the_backoff(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    await enqueue(qs)
    [job] = await claim(qs)
    await fail(qs, job, code="WORKER_SHUTDOWN", retry_after=duration_pb2.Duration(seconds=0))
    [again] = await claim(qs)
    assert again.id == job.id and again.attempts == 2


# -- fencing: the zombie worker ----------------------------------------------------------------


async def test_a_released_and_reclaimed_job_cannot_be_finished_by_its_old_lease(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    await enqueue(qs)
    [zombie] = await claim(qs, worker="slow-worker")
    # The slow worker goes silent past the heartbeat timeout and is released.
    db.execute(
        "UPDATE ingestion_jobs SET last_heartbeat_at = now() - interval '10 minutes' WHERE id = %s",
        (zombie.id,),
    )
    released = await qs.admin.ReleaseStaleJobs(admin_pb.ReleaseStaleJobsRequest())
    assert released.released_count == 1
    [current] = await claim(qs, worker="fast-worker")
    assert current.id == zombie.id and current.lease == zombie.lease + 1

    # The zombie comes back: its heartbeat, completion and failure all bounce and change nothing.
    [answer] = await beat(
        qs,
        queue_pb.HeartbeatRequest(
            job_id=zombie.id, lease=zombie.lease, stage="persist", progress=0.9
        ),
    )
    assert answer.action == queue_pb.HEARTBEAT_ACTION_LEASE_LOST
    for call in (
        qs.queue.Complete(queue_pb.CompleteRequest(job_id=zombie.id, lease=zombie.lease)),
        qs.queue.Fail(queue_pb.FailRequest(job_id=zombie.id, lease=zombie.lease, retryable=False)),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.ABORTED and error_reason(error) == "LEASE_LOST"
    row = fetch_job(db, zombie.id)
    assert (row["status"], row["locked_by"], row["stage"]) == ("RUNNING", "fast-worker", "claimed")

    done = (
        await qs.queue.Complete(queue_pb.CompleteRequest(job_id=current.id, lease=current.lease))
    ).job
    assert (done.status, done.attempts) == (S.JOB_STATUS_SUCCEEDED, 2)


# -- cancel and retry -------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["QUEUED", "RETRY"])
async def test_cancel_of_a_waiting_job_is_immediate(
    qs: RunningQueue, db: psycopg.Connection[Any], status: str
) -> None:
    row = insert_job(db, status=status)
    response = await qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id=str(row["id"])))
    assert response.job.status == S.JOB_STATUS_CANCELLED and not response.cancellation_pending
    assert await claim(qs) == []


async def test_cancel_of_a_running_job_is_delivered_by_heartbeat_and_ends_cancelled(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    await enqueue(qs)
    [job] = await claim(qs)
    response = await qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id=job.id))
    assert response.cancellation_pending
    assert response.job.status == S.JOB_STATUS_RUNNING and response.job.cancel_requested
    [answer] = await beat(
        qs, queue_pb.HeartbeatRequest(job_id=job.id, lease=job.lease, progress=0.3)
    )
    assert answer.action == queue_pb.HEARTBEAT_ACTION_CANCEL
    # The worker stops and reports; the job ends CANCELLED whatever the failure said.
    ended = await fail(qs, job, retryable=True, code="CANCELLED_BY_OPERATOR")
    assert ended.status == S.JOB_STATUS_CANCELLED
    row = fetch_job(db, job.id)
    assert (row["stage"], row["error_code"]) == ("cancelled", "CANCELLED")


@pytest.mark.parametrize("status", ["SUCCEEDED", "FAILED", "CANCELLED"])
async def test_cancel_of_a_finished_job_is_a_failed_precondition(
    qs: RunningQueue, db: psycopg.Connection[Any], status: str
) -> None:
    row = insert_job(db, status=status)
    error = await rpc_error(qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id=str(row["id"]))))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert fetch_job(db, row["id"])["status"] == status


@pytest.mark.parametrize("status", ["FAILED", "CANCELLED"])
async def test_retry_puts_a_dead_job_back_in_the_queue(
    qs: RunningQueue, db: psycopg.Connection[Any], status: str
) -> None:
    row = insert_job(
        db,
        status=status,
        attempts=5,
        last_error="boom",
        errors=[{"attempt": 5, "code": "X", "message": "boom"}],
    )
    job = await qs.admin.RetryJob(admin_pb.RetryJobRequest(job_id=str(row["id"])))
    assert (job.status, job.attempts, job.last_error) == (S.JOB_STATUS_QUEUED, 0, "")
    assert len(job.errors) == 1  # history kept
    [claimed] = await claim(qs)
    assert claimed.id == job.id


@pytest.mark.parametrize("status", ["QUEUED", "RUNNING", "SUCCEEDED", "RETRY"])
async def test_retry_of_a_live_or_succeeded_job_is_a_failed_precondition(
    qs: RunningQueue, db: psycopg.Connection[Any], status: str
) -> None:
    row = insert_job(db, status=status)
    error = await rpc_error(qs.admin.RetryJob(admin_pb.RetryJobRequest(job_id=str(row["id"]))))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "INVALID_TRANSITION"


async def test_unknown_and_malformed_ids(qs: RunningQueue) -> None:
    missing = await rpc_error(
        qs.admin.GetJob(admin_pb.GetJobRequest(job_id="00000000-0000-0000-0000-000000000000"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    malformed = await rpc_error(qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id="42")))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- stale release (the checklist's Tests 5 and 11) --------------------------------------------


async def test_lock_timeout_releases_with_worker_timed_out(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # Test 5: a crashed worker's job, locked an hour ago (heartbeating until recently).
    row = insert_job(
        db,
        status="RUNNING",
        locked_by="crashed-worker",
        seconds_ago={"locked_at": 3600, "last_heartbeat_at": 10},
    )
    response = await qs.admin.ReleaseStaleJobs(admin_pb.ReleaseStaleJobsRequest())
    assert response.released_count == 1
    assert response.jobs[0].reason == "LOCK_TIMEOUT"
    after = fetch_job(db, row["id"])
    assert after["status"] == "RETRY"
    assert "worker timed out" in after["last_error"]


async def test_heartbeat_timeout_releases_with_its_stage_and_code(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # Test 11: locked and silent for 10 minutes, stuck in llm_analysis.
    row = insert_job(
        db,
        status="RUNNING",
        locked_by="crashed-worker",
        stage="llm_analysis",
        seconds_ago={"locked_at": 600, "last_heartbeat_at": 600},
    )
    fresh = insert_job(db, status="RUNNING", seconds_ago={"locked_at": 600, "last_heartbeat_at": 5})
    await qs.admin.ReleaseStaleJobs(admin_pb.ReleaseStaleJobsRequest())
    after = fetch_job(db, row["id"])
    assert (after["status"], after["stage"], after["error_code"]) == (
        "RETRY",
        "released_stale",
        "HEARTBEAT_TIMEOUT",
    )
    assert "worker timed out" in after["last_error"]
    assert fetch_job(db, fresh["id"])["status"] == "RUNNING"


async def test_a_stale_job_on_its_last_attempt_is_dead_lettered(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    row = insert_job(db, status="RUNNING", attempts=5, seconds_ago={"last_heartbeat_at": 600})
    response = await qs.admin.ReleaseStaleJobs(admin_pb.ReleaseStaleJobsRequest())
    assert response.jobs[0].status == S.JOB_STATUS_FAILED
    assert fetch_job(db, row["id"])["status"] == "FAILED"


async def test_a_stale_job_whose_cancel_was_requested_ends_cancelled(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    row = insert_job(
        db, status="RUNNING", seconds_ago={"last_heartbeat_at": 600, "cancel_requested_at": 300}
    )
    await qs.admin.ReleaseStaleJobs(admin_pb.ReleaseStaleJobsRequest())
    assert fetch_job(db, row["id"])["status"] == "CANCELLED"


# -- reads ------------------------------------------------------------------------------------


async def test_list_jobs_pages_newest_first_and_filters_by_status(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    ids = [str(insert_job(db, seconds_ago={"created_at": 100 - i})["id"]) for i in range(5)]
    failed = str(insert_job(db, status="FAILED")["id"])
    page1 = await qs.admin.ListJobs(admin_pb.ListJobsRequest(page_size=3))
    page2 = await qs.admin.ListJobs(
        admin_pb.ListJobsRequest(page_size=3, page_token=page1.next_page_token)
    )
    listed = [j.id for j in page1.jobs] + [j.id for j in page2.jobs]
    assert listed == [failed, *reversed(ids)]
    assert page2.next_page_token == ""
    only_failed = await qs.admin.ListJobs(admin_pb.ListJobsRequest(status=S.JOB_STATUS_FAILED))
    assert [j.id for j in only_failed.jobs] == [failed]
    bad = await rpc_error(qs.admin.ListJobs(admin_pb.ListJobsRequest(page_token="garbage!")))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_queue_stats_count_every_status(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    for status in ["QUEUED", "QUEUED", "SUCCEEDED", "FAILED"]:
        insert_job(db, status=status)
    insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 600})
    stats = await qs.admin.GetQueueStats(admin_pb.GetQueueStatsRequest())
    assert dict(stats.by_status) == {
        "QUEUED": 2,
        "RUNNING": 1,
        "SUCCEEDED": 1,
        "RETRY": 0,
        "FAILED": 1,
        "CANCELLED": 0,
    }
    assert stats.total == 5
    assert stats.stale_running == 1


async def test_running_jobs_show_stage_progress_and_ages(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    insert_job(
        db,
        status="RUNNING",
        stage="llm_analysis",
        progress=0.6,
        seconds_ago={"processing_started_at": 120, "locked_at": 120, "last_heartbeat_at": 5},
    )
    [running] = (await qs.admin.ListRunningJobs(admin_pb.ListRunningJobsRequest())).jobs
    assert running.job.stage == "llm_analysis"
    assert 119 <= running.running.seconds <= 125
    assert 4 <= running.heartbeat_age.seconds <= 8


async def test_running_jobs_come_a_page_at_a_time(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    ids = [
        str(insert_job(db, status="RUNNING", seconds_ago={"locked_at": 100 - i})["id"])
        for i in range(5)
    ]
    listed: list[str] = []
    request = admin_pb.ListRunningJobsRequest(page_size=2)
    pages = 0
    while True:
        page = await qs.admin.ListRunningJobs(request)
        listed += [entry.job.id for entry in page.jobs]
        pages += 1
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert (listed, pages) == (ids, 3)
    bad = await rpc_error(qs.admin.ListRunningJobs(admin_pb.ListRunningJobsRequest(page_size=1001)))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Without a page size, a page holds 500.
    db.execute(
        "INSERT INTO ingestion_jobs (status, locked_at, input, idempotency_key)"
        " SELECT 'RUNNING', now(), jsonb_build_object('n', g), 'r' || g"
        " FROM generate_series(1, 500) g"
    )
    first = await qs.admin.ListRunningJobs(admin_pb.ListRunningJobsRequest())
    assert len(first.jobs) == 500 and first.next_page_token


# -- release (hand back) ----------------------------------------------------------------------


async def test_release_hands_a_job_back_without_counting_the_attempt(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    await enqueue(qs)
    [job] = await claim(qs, worker="stopping-worker")
    released = (
        await qs.queue.Release(
            queue_pb.ReleaseRequest(job_id=job.id, lease=job.lease, reason="worker shutting down")
        )
    ).job
    assert (released.status, released.attempts, released.stage) == (
        S.JOB_STATUS_QUEUED,
        0,
        "released",
    )
    assert len(released.errors) == 0  # not a failure
    # The old lease is dead; the next claim is attempt 1 again, under a new lease.
    error = await rpc_error(
        qs.queue.Complete(queue_pb.CompleteRequest(job_id=job.id, lease=job.lease))
    )
    assert error.code() == grpc.StatusCode.ABORTED
    [again] = await claim(qs, worker="other-worker")
    assert (again.id, again.attempts, again.lease) == (job.id, 1, job.lease + 1)


async def test_release_of_a_job_whose_cancel_was_requested_ends_it_cancelled(
    qs: RunningQueue,
) -> None:
    await enqueue(qs)
    [job] = await claim(qs)
    await qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id=job.id))
    released = (await qs.queue.Release(queue_pb.ReleaseRequest(job_id=job.id, lease=job.lease))).job
    assert released.status == S.JOB_STATUS_CANCELLED


async def test_a_claim_whose_caller_goes_away_hands_its_jobs_back(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    job = await enqueue(qs)
    claimer = qs.service.queue._claimer
    attempt = asyncio.create_task(claimer._claim_once("vanishing-worker", 1, "default"))
    await asyncio.sleep(0)  # the statement is under way
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt

    async def handed_back() -> dict[str, Any]:
        while (row := fetch_job(db, job.id))["status"] != "QUEUED" or row["lease"] == 0:
            await asyncio.sleep(0.02)
        return row

    row = await asyncio.wait_for(handed_back(), 10)
    assert (row["attempts"], row["lease"], row["stage"]) == (0, 1, "released")


async def test_stopping_the_service_ends_heartbeat_streams_at_once(qs: RunningQueue) -> None:
    await enqueue(qs)
    [job] = await claim(qs)
    call = qs.queue.Heartbeat()
    await call.write(queue_pb.HeartbeatRequest(job_id=job.id, lease=job.lease, progress=0.1))
    assert (await call.read()).action == queue_pb.HEARTBEAT_ACTION_CONTINUE
    started = time.monotonic()
    await qs.service.stop(grace=30)
    # The open stream did not hold the shutdown for its 30 s grace.
    assert time.monotonic() - started < 5
    assert await call.read() == grpc.aio.EOF


async def test_a_completion_with_a_nul_fails_alone_and_a_repeat_completion_is_ok(
    qs: RunningQueue,
) -> None:
    for i in range(3):
        await enqueue(qs, f"videos/{i}.mp4")
    jobs = await claim(qs, 3)
    poisoned = struct_pb2.Struct()
    poisoned.update({"transcript": "bad\x00byte"})
    results = await asyncio.gather(
        qs.queue.Complete(queue_pb.CompleteRequest(job_id=jobs[0].id, lease=jobs[0].lease)),
        qs.queue.Complete(
            queue_pb.CompleteRequest(job_id=jobs[1].id, lease=jobs[1].lease, output=poisoned)
        ),
        qs.queue.Complete(queue_pb.CompleteRequest(job_id=jobs[2].id, lease=jobs[2].lease)),
        return_exceptions=True,
    )
    assert results[0].job.status == S.JOB_STATUS_SUCCEEDED
    assert results[2].job.status == S.JOB_STATUS_SUCCEEDED
    assert isinstance(results[1], grpc.aio.AioRpcError)
    assert results[1].code() == grpc.StatusCode.INVALID_ARGUMENT
    # A repeat of a completion that landed (its answer lost in transit) is a success.
    again = await qs.queue.Complete(
        queue_pb.CompleteRequest(job_id=jobs[0].id, lease=jobs[0].lease)
    )
    assert again.job.status == S.JOB_STATUS_SUCCEEDED


async def test_a_failure_message_with_a_nul_is_kept_readable(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    await enqueue(qs)
    [job] = await claim(qs)
    failed = await fail(qs, job, retryable=False, code="FFMPEG", message="broken\x00frame")
    assert failed.status == S.JOB_STATUS_FAILED
    assert fetch_job(db, job.id)["last_error"] == "broken\ufffdframe"
