"""A job's errors history keeps its last 20 failed attempts and counts them all, across operator
retries, so a job retried for ever grows neither its row nor the answers that carry it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import queue_service_pb2 as queue_pb
from tests.support.grpc_server import RunningQueue
from tests.support.jobs import fetch_job, insert_job

pytestmark = pytest.mark.integration

KEPT = 20


async def test_failures_across_operator_retries_keep_the_last_twenty_and_count_all(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    job_id = str(insert_job(db, max_attempts=1)["id"])
    for failure in range(1, 26):
        [job] = (await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=1))).jobs
        await qs.queue.Fail(
            queue_pb.FailRequest(
                job_id=job.id, lease=job.lease, error_code="E", message=f"failure {failure}"
            )
        )
        await qs.admin.RetryJob(admin_pb.RetryJobRequest(job_id=job_id))
    stored = fetch_job(db, job_id)["errors"]
    assert len(stored) == KEPT
    assert [entry["message"] for entry in stored] == [f"failure {n}" for n in range(6, 26)]
    assert [entry["number"] for entry in stored] == list(range(6, 26))
    assert {entry["attempt"] for entry in stored} == {1}  # each retry starts its attempts anew
    job = await qs.admin.GetJob(admin_pb.GetJobRequest(job_id=job_id))
    assert len(job.errors) == KEPT and job.errors_total == 25
    assert job.errors[-1].message == "failure 25"


async def test_a_stale_release_numbers_its_entry_after_a_history_written_before_numbers(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # A history as earlier versions wrote it: 20 entries without a number.
    legacy = [{"attempt": n, "code": "E", "message": f"old {n}"} for n in range(1, 21)]
    row = insert_job(
        db,
        status="RUNNING",
        attempts=2,
        max_attempts=5,
        errors=legacy,
        seconds_ago={"last_heartbeat_at": 600},
    )
    released = await qs.admin.ReleaseStaleJobs(admin_pb.ReleaseStaleJobsRequest())
    assert released.released_count == 1
    stored = fetch_job(db, row["id"])["errors"]
    assert len(stored) == KEPT
    assert stored[0]["message"] == "old 2" and "number" not in stored[0]
    assert (stored[-1]["code"], stored[-1]["number"]) == ("HEARTBEAT_TIMEOUT", 21)
    job = await qs.admin.GetJob(admin_pb.GetJobRequest(job_id=str(row["id"])))
    assert job.errors_total == 21


async def test_a_short_history_counts_its_entries(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    row = insert_job(db, status="FAILED", errors=[{"attempt": 1, "code": "E", "message": "m"}])
    job = await qs.admin.GetJob(admin_pb.GetJobRequest(job_id=str(row["id"])))
    assert (len(job.errors), job.errors_total) == (1, 1)
