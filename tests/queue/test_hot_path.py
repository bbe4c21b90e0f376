"""The hot path batches every hop: single calls that arrive together share a statement, a
heartbeat message may carry many jobs' beats, and answers carry what the contract documents."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2

from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import admin_service_pb2_grpc, job_pb2
from jobqueue.v1 import queue_service_pb2 as queue_pb
from tests.support.grpc_server import RunningQueue
from tests.support.jobs import fetch_job, insert_job

pytestmark = pytest.mark.integration

S = job_pb2.JobStatus


def advert_input(key: str) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update({"source_type": "s3", "s3_key": key, "frames": 3})
    return message


async def test_single_enqueues_that_arrive_together_share_a_statement(
    qs: RunningQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = qs.service.store
    enqueue = store.enqueue
    statements: list[int] = []

    async def counted(jobs: Any) -> Any:
        statements.append(len(jobs))
        return await enqueue(jobs)

    monkeypatch.setattr(qs.service.admin.enqueues, "_flush", counted)
    channels = [grpc.aio.insecure_channel(qs.target) for _ in range(4)]
    try:
        stubs = [admin_service_pb2_grpc.AdminServiceStub(channel) for channel in channels]
        responses = await asyncio.gather(
            *(
                stubs[i % 4].EnqueueJob(
                    admin_pb.EnqueueJobRequest(input=advert_input(f"videos/{i}.mp4"))
                )
                for i in range(40)
            )
        )
    finally:
        for channel in channels:
            await channel.close()
    assert sum(statements) == 40
    assert len(statements) < 40, "every enqueue had a statement of its own"
    assert not any(r.already_existed for r in responses)
    assert len({r.job.id for r in responses}) == 40


async def test_an_enqueue_answers_with_the_whole_new_job(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    request = admin_pb.EnqueueJobRequest(
        input=advert_input("videos/whole.mp4"), queue="media", priority=7, max_attempts=3
    )
    job = (await qs.admin.EnqueueJob(request)).job
    fetched = await qs.admin.GetJob(admin_pb.GetJobRequest(job_id=job.id))
    # GetJob alone carries the audit trail (here: this enqueue); the row is the same.
    assert [entry.action for entry in fetched.audit_trail] == ["enqueue"]
    fetched.ClearField("audit_trail")
    assert job == fetched
    assert dict(job.input) == {"source_type": "s3", "s3_key": "videos/whole.mp4", "frames": 3}
    assert fetch_job(db, job.id)["input"]["frames"] == 3  # stored as the integer it is


async def test_a_claim_answers_with_everything_but_output_and_errors(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # A job back for its second attempt: its first one failed.
    failed_once = {"error_code": "S3_TIMEOUT", "last_error": "slow", "attempts": 1, "lease": 1}
    errors = [{"attempt": 1, "code": "S3_TIMEOUT", "message": "slow"}]
    insert_job(db, status="RETRY", errors=errors, **failed_once)
    [job] = (await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=1))).jobs
    whole = await qs.admin.GetJob(admin_pb.GetJobRequest(job_id=job.id))
    assert len(whole.errors) == 1 and len(job.errors) == 0
    assert whole.errors_total == 1 and job.errors_total == 0
    del whole.errors[:]
    whole.errors_total = 0
    assert job == whole


async def test_a_settle_answers_with_the_fields_it_documents(qs: RunningQueue) -> None:
    await qs.admin.EnqueueJob(admin_pb.EnqueueJobRequest(input=advert_input("videos/s.mp4")))
    [job] = (await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=1))).jobs
    failed = (
        await qs.queue.Fail(
            queue_pb.FailRequest(
                job_id=job.id, lease=job.lease, error_code="E", message="boom", retryable=True
            )
        )
    ).job
    whole = await qs.admin.GetJob(admin_pb.GetJobRequest(job_id=job.id))
    documented = (
        *("id", "queue", "status", "attempts", "max_attempts", "lease", "stage", "progress"),
        *("error_code", "last_error", "run_after", "locked_by", "completed_at", "updated_at"),
    )
    for name in documented:
        assert getattr(failed, name) == getattr(whole, name), name
    assert failed.status == S.JOB_STATUS_RETRY


async def test_one_heartbeat_message_carries_many_jobs_beats_answered_in_order(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    running = insert_job(db, status="RUNNING")
    cancelled = insert_job(db, status="RUNNING", seconds_ago={"cancel_requested_at": 0})
    lost = insert_job(db, status="SUCCEEDED", lease=1)
    request = queue_pb.HeartbeatRequest()
    for row, stage in ((running, "transcription"), (cancelled, ""), (lost, "x")):
        request.beats.add(job_id=str(row["id"]), lease=row["lease"], stage=stage, progress=0.5)
    call = qs.queue.Heartbeat()
    await call.write(request)
    response = await call.read()
    await call.done_writing()
    assert [(b.job_id, b.lease, b.action) for b in response.beats] == [
        (str(running["id"]), running["lease"], queue_pb.HEARTBEAT_ACTION_CONTINUE),
        (str(cancelled["id"]), cancelled["lease"], queue_pb.HEARTBEAT_ACTION_CANCEL),
        (str(lost["id"]), lost["lease"], queue_pb.HEARTBEAT_ACTION_LEASE_LOST),
    ]
    assert not response.job_id
    row = fetch_job(db, running["id"])
    assert (row["stage"], row["progress"]) == ("transcription", 0.5)


async def test_a_heartbeat_with_a_job_id_and_beats_is_refused_and_the_stream_goes_on(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    running = insert_job(db, status="RUNNING")
    request = queue_pb.HeartbeatRequest(job_id=str(running["id"]), lease=running["lease"])
    request.beats.add(job_id=str(running["id"]), lease=running["lease"])
    call = qs.queue.Heartbeat()
    await call.write(request)
    refused = await call.read()
    assert refused.action == queue_pb.HEARTBEAT_ACTION_INVALID
    assert refused.message == "a heartbeat carries one beat (job_id) or several (beats), not both"
    assert not refused.beats
    await call.write(queue_pb.HeartbeatRequest(job_id=str(running["id"]), lease=1))
    assert (await call.read()).action == queue_pb.HEARTBEAT_ACTION_CONTINUE
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF


async def test_one_malformed_beat_of_a_message_is_refused_alone(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # A custom pipeline's 113-character stage once ended the stream and, resent first on every
    # reconnect, got the healthy job beside it released.
    healthy = insert_job(db, status="RUNNING")
    custom = insert_job(db, status="RUNNING")
    request = queue_pb.HeartbeatRequest()
    request.beats.add(job_id=str(healthy["id"]), lease=1, stage="transcription", progress=0.5)
    request.beats.add(job_id=str(custom["id"]), lease=1, stage="s" * 113, progress=0.5)
    request.beats.add(job_id="not-a-uuid", lease=1)
    request.beats.add(job_id=str(custom["id"]), lease=1, progress=float("nan"))
    call = qs.queue.Heartbeat()
    await call.write(request)
    response = await call.read()
    invalid = queue_pb.HEARTBEAT_ACTION_INVALID
    assert [(b.job_id, b.action, b.message) for b in response.beats] == [
        (str(healthy["id"]), queue_pb.HEARTBEAT_ACTION_CONTINUE, ""),
        (str(custom["id"]), invalid, "stage is at most 100 printable characters"),
        ("not-a-uuid", invalid, "job_id must be a UUID, got 'not-a-uuid'"),
        (str(custom["id"]), invalid, "progress must be 0..1"),
    ]
    # The stream is still open: the custom job's next, well-formed beat is written.
    await call.write(queue_pb.HeartbeatRequest(job_id=str(custom["id"]), lease=1, stage="ok"))
    assert (await call.read()).action == queue_pb.HEARTBEAT_ACTION_CONTINUE
    await call.done_writing()
    assert fetch_job(db, healthy["id"])["stage"] == "transcription"
    assert fetch_job(db, custom["id"])["stage"] == "ok"
