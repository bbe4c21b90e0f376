"""The audit trail of admin actions, over a real loopback server: every action recorded with
the caller's role, credential and operator, refusals included, and shown by GetJob."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import psycopg
import pytest

from jobqueue.rpc import bearer_metadata
from jobqueue.v1 import admin_service_pb2 as admin_pb
from tests.support.grpc_server import running_queue, service_config
from tests.support.jobs import insert_job

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "audit-admin-token-0123"


def enqueue_request(key: str) -> admin_pb.EnqueueJobRequest:
    request = admin_pb.EnqueueJobRequest()
    request.input.update({"source_type": "s3", "s3_key": key})
    return request


def audit_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT action, job_id::text, role, credential, operator, outcome"
            " FROM admin_audit ORDER BY id"
        ).fetchall()


async def test_each_admin_action_is_recorded_and_shown_by_get_job(database_url: str) -> None:
    config = service_config(database_url, admin_token=ADMIN_TOKEN, auth_token="shared")
    async with running_queue(config) as qs:
        ops = bearer_metadata(ADMIN_TOKEN, "ops-cli bob")
        batch = admin_pb.EnqueueJobsRequest(
            jobs=[enqueue_request("videos/a1.mp4"), enqueue_request("videos/a2.mp4")]
        )
        enqueued = await qs.admin.EnqueueJobs(batch, metadata=ops)
        first, second = (result.job.id for result in enqueued.results)
        again = await qs.admin.EnqueueJob(
            enqueue_request("videos/a1.mp4"), metadata=bearer_metadata("shared")
        )
        assert again.already_existed
        await qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id=first), metadata=ops)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await qs.admin.RetryJob(admin_pb.RetryJobRequest(job_id=second), metadata=ops)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError):
            await qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id="nope"), metadata=ops)
        released = await qs.admin.ReleaseStaleJobs(admin_pb.ReleaseStaleJobsRequest(), metadata=ops)
        assert released.released_count == 0

        job = await qs.admin.GetJob(admin_pb.GetJobRequest(job_id=first), metadata=ops)
        assert [
            (e.action, e.role, e.credential, e.operator, e.outcome) for e in job.audit_trail
        ] == [
            ("enqueue", "admin", "QUEUE_ADMIN_TOKEN", "ops-cli bob", "ok"),
            ("enqueue", "admin+worker", "QUEUE_AUTH_TOKEN", "", "already_existed"),
            ("cancel", "admin", "QUEUE_ADMIN_TOKEN", "ops-cli bob", "ok"),
        ]
        assert all(entry.HasField("at") for entry in job.audit_trail)
        # Lists do not carry the trail.
        listed = await qs.admin.ListJobs(admin_pb.ListJobsRequest(), metadata=ops)
        assert all(not listed_job.audit_trail for listed_job in listed.jobs)

    rows = audit_rows(database_url)
    assert len(rows) == 7
    assert rows[4:] == [
        ("retry", second, "admin", "QUEUE_ADMIN_TOKEN", "ops-cli bob",
         "FAILED_PRECONDITION:INVALID_TRANSITION"),
        ("cancel", None, "admin", "QUEUE_ADMIN_TOKEN", "ops-cli bob",
         "INVALID_ARGUMENT:INVALID_ARGUMENT"),
        ("release_stale", None, "admin", "QUEUE_ADMIN_TOKEN", "ops-cli bob", "released:none"),
    ]  # fmt: skip


async def test_without_credentials_the_caller_is_recorded_as_anonymous(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    job = insert_job(db, status="FAILED")
    async with running_queue(service_config(database_url)) as qs:
        await qs.admin.RetryJob(admin_pb.RetryJobRequest(job_id=str(job["id"])))
    assert audit_rows(database_url) == [
        ("retry", str(job["id"]), "admin+worker", "anonymous", "", "ok")
    ]


async def test_enqueues_sharing_a_statement_each_record_their_own_caller(
    database_url: str,
) -> None:
    # Single enqueues that arrive together are written by one statement (the service coalesces
    # them), and that statement writes their entries too: each under its own caller.
    config = service_config(database_url, admin_token=ADMIN_TOKEN, auth_token="shared")
    admin = (ADMIN_TOKEN, "QUEUE_ADMIN_TOKEN")
    shared = ("shared", "QUEUE_AUTH_TOKEN")
    callers = [(*(admin if i % 2 else shared), f"operator {i}" if i % 3 else "") for i in range(20)]
    async with running_queue(config) as qs:
        answers = await asyncio.gather(
            *(
                qs.admin.EnqueueJob(
                    enqueue_request(f"videos/c{i}.mp4"), metadata=bearer_metadata(token, operator)
                )
                for i, (token, _, operator) in enumerate(callers)
            )
        )
    assert sorted(row[1:] for row in audit_rows(database_url)) == sorted(
        (answer.job.id, "admin" if token == ADMIN_TOKEN else "admin+worker", name, operator, "ok")
        for answer, (token, name, operator) in zip(answers, callers, strict=True)
    )
