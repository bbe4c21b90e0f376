"""Idempotency keys are namespaced: by queue, and the caller's apart from the derived ones.

Issue 11, item 11: one unique index over idempotency_key alone held every key, so the same
caller key in two queues made one job (the second queue's enqueue answered with the first
queue's job, which its workers never claim), and a caller key equal to the key derived for
another input (sha256 of queue and input: anyone can compute it) captured that input: each of
its later enqueues answered "already existed" with the caller's job, and it never ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2

from jobqueue.rpc import error_info
from jobqueue.v1 import admin_service_pb2 as admin_pb
from tests.support.databases import psql
from tests.support.grpc_server import RunningQueue
from tests.support.jobs import insert_job
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration


def advert(key: str) -> dict[str, Any]:
    return {"source_type": "s3", "s3_key": key}


async def enqueue(
    qs: RunningQueue, job_input: dict[str, Any], *, queue: str = "", key: str = ""
) -> admin_pb.EnqueueJobResponse:
    message = struct_pb2.Struct()
    message.update(job_input)
    return await qs.admin.EnqueueJob(
        admin_pb.EnqueueJobRequest(input=message, queue=queue, idempotency_key=key)
    )


def key_of(db: psycopg.Connection[Any], queue: str, job_input: dict[str, Any]) -> str:
    row = db.execute(
        "SELECT ingestion_job_key(%s, %s::jsonb, NULL)", (queue, json.dumps(job_input))
    ).fetchone()
    assert row is not None
    return str(row[0])


async def test_the_same_caller_key_in_two_queues_makes_two_jobs(qs: RunningQueue) -> None:
    media = await enqueue(qs, advert("videos/a.mp4"), queue="media", key="upload-7")
    other = await enqueue(qs, advert("videos/b.mp4"), queue="other", key="upload-7")
    assert not media.already_existed and not other.already_existed
    assert media.job.id != other.job.id
    assert (media.job.queue, other.job.queue) == ("media", "other")
    # Within each queue the key still names its one job.
    again = await enqueue(qs, advert("videos/c.mp4"), queue="other", key="upload-7")
    assert again.already_existed and again.job.id == other.job.id


async def test_a_batch_with_one_caller_key_in_two_queues_makes_two_jobs(qs: RunningQueue) -> None:
    jobs = []
    for queue in ("media", "other", "media"):
        message = struct_pb2.Struct()
        message.update(advert(f"videos/{queue}.mp4"))
        jobs.append(admin_pb.EnqueueJobRequest(input=message, queue=queue, idempotency_key="k"))
    answer = await qs.admin.EnqueueJobs(admin_pb.EnqueueJobsRequest(jobs=jobs))
    first, second, third = answer.results
    assert not first.already_existed and not second.already_existed and third.already_existed
    assert first.job.id == third.job.id != second.job.id


async def test_a_caller_key_cannot_capture_another_inputs_derived_key(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    victim = advert("videos/victim.mp4")
    stolen = key_of(db, "default", victim)
    # The key the service would derive for the victim's input, sent as a caller's key: refused
    # (that form is the service's own), so it can never name another job.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await enqueue(qs, advert("videos/attacker.mp4"), key=stolen)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(raised.value)
    assert info is not None and info.metadata["field"] == "idempotency_key"

    first = await enqueue(qs, victim)
    assert not first.already_existed and first.job.idempotency_key == stolen
    assert (await enqueue(qs, victim)).job.id == first.job.id
    row = db.execute("SELECT count(*) FROM ingestion_jobs").fetchone()
    assert row == (1,)


def test_psql_callers_get_the_same_rule(db: psycopg.Connection[Any]) -> None:
    victim = advert("videos/victim.mp4")
    stolen = key_of(db, "default", victim)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="reserved"):
        db.execute(
            "SELECT * FROM enqueue_job(%s::jsonb, 'default', 0, 5, %s)",
            (json.dumps(advert("videos/attacker.mp4")), stolen),
        )
    # Upper case, or any other form, is the caller's own.
    db.execute(
        "SELECT * FROM enqueue_job(%s::jsonb, 'default', 0, 5, %s)",
        (json.dumps(advert("videos/attacker.mp4")), stolen.upper()),
    )
    created = db.execute("SELECT * FROM enqueue_job(%s::jsonb)", (json.dumps(victim),)).fetchone()
    assert created is not None and created[2] is False  # a new job: not captured


async def test_jobs_enqueued_before_keep_their_keys(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # Rows as the enqueue before this change stored them: a derived key, and a caller's key.
    job_input = advert("videos/old.mp4")
    old_derived = insert_job(db, input=job_input, idempotency_key=key_of(db, "default", job_input))
    old_caller = insert_job(db, input=advert("videos/old2.mp4"), idempotency_key="legacy-1")
    again = await enqueue(qs, job_input)
    assert again.already_existed and again.job.id == str(old_derived["id"])
    again = await enqueue(qs, advert("videos/new.mp4"), key="legacy-1")
    assert again.already_existed and again.job.id == str(old_caller["id"])


def test_an_upgrade_keeps_existing_keys_and_enqueue_works_before_and_after_007(
    empty_database: str, tmp_path: Path
) -> None:
    migrations = ROOT / "migrations"
    for path in sorted(migrations.glob("00[3-6]_*.sql")):  # the schema before 007
        psql(empty_database, "", "-q", "-f", str(path), cwd=tmp_path)
    with psycopg.connect(empty_database, autocommit=True) as db:
        # Before 007 (a deploy re-applies 004 first): the table-wide index still holds the keys,
        # and enqueue works with it.
        job_input = advert("videos/upgrade.mp4")
        first = db.execute("SELECT * FROM enqueue_job(%s::jsonb)", (json.dumps(job_input),))
        job_id = first.fetchone()[0]  # type: ignore[index]
        insert_job(db, queue="media", idempotency_key="legacy-1")
        again = db.execute("SELECT * FROM enqueue_job(%s::jsonb)", (json.dumps(job_input),))
        assert again.fetchone()[0::2] == (job_id, True)  # type: ignore[index]

        for _ in range(2):
            psql(empty_database, "", "-q", "-f", str(migrations / "007_idempotency_namespaces.sql"))
        again = db.execute("SELECT * FROM enqueue_job(%s::jsonb)", (json.dumps(job_input),))
        assert again.fetchone()[0::2] == (job_id, True)  # type: ignore[index]
        known = db.execute(
            "SELECT * FROM enqueue_job(%s::jsonb, 'media', 0, 5, 'legacy-1')",
            (json.dumps(advert("videos/other.mp4")),),
        ).fetchone()
        assert known is not None and known[2] is True
        other_queue = db.execute(
            "SELECT * FROM enqueue_job(%s::jsonb, 'other', 0, 5, 'legacy-1')",
            (json.dumps(advert("videos/other.mp4")),),
        ).fetchone()
        assert other_queue is not None and other_queue[2] is False


def test_007_swaps_the_unique_index_and_re_applies(
    database_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    migration = ROOT / "migrations" / "007_idempotency_namespaces.sql"
    for _ in range(2):
        psql(database_url, "", "-q", "-f", str(migration), cwd=tmp_path)
    indexes = dict(
        db.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ingestion_jobs'"
        ).fetchall()
    )
    assert "ingestion_jobs_idempotency_key_idx" not in indexes
    assert "UNIQUE INDEX" in indexes["ingestion_jobs_queue_idempotency_key_idx"]
    assert "(queue, idempotency_key)" in indexes["ingestion_jobs_queue_idempotency_key_idx"]
