"""Retention: finished jobs are deleted once they finished longer ago than their status keeps
them (SUCCEEDED and CANCELLED 7 days, FAILED 30 by default), in small batches that skip locked
rows; every other job stays, and so do the adverts of deleted jobs."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from jobqueue.v1 import admin_service_pb2 as admin_pb
from queue_service import upkeep
from tests.support.grpc_server import RunningQueue, running_queue, service_config
from tests.support.jobs import insert_job

pytestmark = pytest.mark.integration

DAY = 86_400


def finished(db: psycopg.Connection[Any], status: str, days_ago: float, **fields: Any) -> str:
    """A job that finished `days_ago` days ago (and was created an hour before)."""
    ago = days_ago * DAY
    row = insert_job(
        db, status=status, seconds_ago={"completed_at": ago, "created_at": ago + 3600}, **fields
    )
    return str(row["id"])


def remaining(db: psycopg.Connection[Any]) -> set[str]:
    return {str(job_id) for (job_id,) in db.execute("SELECT id FROM ingestion_jobs")}


async def test_finished_jobs_past_their_retention_go_and_everything_else_stays(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    gone = {
        finished(db, "SUCCEEDED", 8),
        finished(db, "CANCELLED", 7.1),
        finished(db, "FAILED", 31),
    }
    kept = {
        finished(db, "SUCCEEDED", 6.9),
        finished(db, "CANCELLED", 1),
        finished(db, "FAILED", 29),
        # Not finished, however old: waiting, scheduled, running, in backoff.
        str(insert_job(db, seconds_ago={"created_at": 100 * DAY})["id"]),
        str(insert_job(db, status="RETRY", seconds_ago={"created_at": 100 * DAY})["id"]),
        str(
            insert_job(db, status="RUNNING", seconds_ago={"created_at": 100 * DAY, "locked_at": 9})[
                "id"
            ]
        ),
        # Created long ago, finished recently (it waited, or an operator retried it).
        str(
            insert_job(
                db, status="SUCCEEDED", seconds_ago={"created_at": 100 * DAY, "completed_at": 60}
            )["id"]
        ),
    }
    # The advert that a deleted job stored outlives it.
    pruned_job = next(iter(gone))
    db.execute(
        "INSERT INTO adverts (source_key, job_id) VALUES ('s3:videos/kept.mp4', %s)", (pruned_job,)
    )
    deleted = await qs.service.upkeep.prune()
    assert deleted == {"SUCCEEDED": 1, "CANCELLED": 1, "FAILED": 1}
    assert remaining(db) == kept
    assert db.execute("SELECT job_id::text FROM adverts").fetchall() == [(pruned_job,)]
    stats = await qs.admin.GetQueueStats(admin_pb.GetQueueStatsRequest())
    assert stats.total == len(kept)
    assert await qs.service.upkeep.prune() == {}


async def test_a_large_backlog_goes_in_batches_and_a_locked_row_is_skipped(
    qs: RunningQueue,
    db: psycopg.Connection[Any],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upkeep, "PRUNE_BATCH", 100)
    db.execute(
        "INSERT INTO ingestion_jobs (status, input, idempotency_key, created_at, completed_at)"
        " SELECT 'SUCCEEDED', jsonb_build_object('n', g), 'old-' || g,"
        "        now() - interval '20 days', now() - interval '10 days'"
        " FROM generate_series(1, 250) g"
    )
    locked = finished(db, "SUCCEEDED", 10)
    store = qs.service.store
    prune_finished = store.prune_finished
    statements: list[int] = []

    async def counted(status: str, age: float, batch: int) -> int:
        deleted = await prune_finished(status, age, batch)
        statements.append(deleted)
        return deleted

    monkeypatch.setattr(store, "prune_finished", counted)
    with psycopg.connect(database_url) as operator:  # an open transaction holds the row
        operator.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR UPDATE", (locked,))
        deleted = await asyncio.wait_for(qs.service.upkeep.prune(), 30)
        operator.rollback()
    assert deleted == {"SUCCEEDED": 250}
    assert statements == [100, 100, 50, 0, 0]  # and one each for CANCELLED and FAILED
    assert remaining(db) == {locked}


async def test_the_pruner_runs_on_its_own_and_zero_keeps_a_status(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    old_success = finished(db, "SUCCEEDED", 8)
    old_failure = finished(db, "FAILED", 1000)
    config = service_config(
        database_url, retention_sweep_interval_seconds=0.2, retention_failed_seconds=0
    )
    async with running_queue(config):

        async def pruned() -> None:
            while old_success in remaining(db):
                await asyncio.sleep(0.1)

        await asyncio.wait_for(pruned(), 15)
    assert remaining(db) == {old_failure}


def audit_entry(db: psycopg.Connection[Any], days_ago: float) -> int:
    row = db.execute(
        "INSERT INTO admin_audit (at, action, role, credential, outcome)"
        " VALUES (now() - make_interval(secs => %s), 'retry', 'admin', 'QUEUE_ADMIN_TOKEN', 'ok')"
        " RETURNING id",
        (days_ago * DAY,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def audit_ids(db: psycopg.Connection[Any]) -> set[int]:
    return {entry_id for (entry_id,) in db.execute("SELECT id FROM admin_audit")}


async def test_audit_entries_go_after_ninety_days_in_batches_and_zero_keeps_them(
    database_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upkeep, "PRUNE_BATCH", 100)
    old = {audit_entry(db, 91) for _ in range(250)}
    kept = {audit_entry(db, 89), audit_entry(db, 1)}
    db.commit()
    async with running_queue(service_config(database_url, retention_audit_seconds=0)) as qs:
        assert "audit" not in await qs.service.upkeep.prune()
    assert audit_ids(db) == old | kept

    async with running_queue(service_config(database_url)) as qs:
        statements: list[int] = []
        prune_audit = qs.service.store.prune_audit

        async def counted(age: float, batch: int) -> int:
            statements.append(await prune_audit(age, batch))
            return statements[-1]

        monkeypatch.setattr(qs.service.store, "prune_audit", counted)
        assert (await qs.service.upkeep.prune())["audit"] == 250
    assert statements == [100, 100, 50]
    assert audit_ids(db) == kept
