"""GetQueueStats counts from 008's ingestion_job_counts, which triggers keep exact through every
kind of write (the state machine's, an operator's UPDATE, DELETE and TRUNCATE, retention), and
which the service folds into one row per queue and status; reading it touches a handful of
buffers however many finished jobs the table holds."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import queue_service_pb2 as queue_pb
from queue_service.store import queries
from tests.support.databases import psql
from tests.support.grpc_server import RunningQueue
from tests.support.jobs import insert_job
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
STATUSES = ("QUEUED", "RUNNING", "SUCCEEDED", "RETRY", "FAILED", "CANCELLED")


def counted(db: psycopg.Connection[Any], queue: str | None = None) -> dict[str, int]:
    """The counts as a full scan of the table finds them."""
    rows = db.execute(
        "SELECT status, count(*) FROM ingestion_jobs WHERE %(q)s::text IS NULL OR queue = %(q)s"
        " GROUP BY status",
        {"q": queue},
    ).fetchall()
    found = dict(rows)
    return {status: int(found.get(status, 0)) for status in STATUSES}


async def stats(qs: RunningQueue, queue: str = "") -> dict[str, int]:
    answer = await qs.admin.GetQueueStats(admin_pb.GetQueueStatsRequest(queue=queue))
    assert answer.total == sum(answer.by_status.values())
    return dict(answer.by_status)


async def test_the_counts_follow_every_kind_of_write(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    for i in range(6):
        insert_job(db, queue="media" if i % 2 else "default")
    insert_job(db, status="FAILED", queue="media")
    [job] = (await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=1))).jobs
    await qs.queue.Complete(queue_pb.CompleteRequest(job_id=job.id, lease=job.lease))
    [job] = (await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=1))).jobs
    await qs.queue.Fail(queue_pb.FailRequest(job_id=job.id, lease=job.lease, retryable=True))
    claimed = (
        await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w", max_jobs=5, queue="media"))
    ).jobs
    await qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id=claimed[0].id))
    # An operator at a psql prompt: the checklist's Test 5 sets a status by hand.
    db.execute("UPDATE ingestion_jobs SET status = 'RUNNING', locked_at = now() WHERE id = %s",
               (job.id,))  # fmt: skip
    db.execute("DELETE FROM ingestion_jobs WHERE status = 'FAILED'")
    assert await stats(qs) == counted(db)
    assert await stats(qs, "media") == counted(db, "media")
    # Folded into one row per queue and status, the answer is the same.
    folded = await qs.service.upkeep.fold()
    assert folded >= 1
    assert db.execute("SELECT count(*) FROM ingestion_job_counts").fetchone() == (
        len(db.execute("SELECT DISTINCT queue, status FROM ingestion_jobs").fetchall()),
    )
    assert await stats(qs) == counted(db)
    db.execute("TRUNCATE ingestion_jobs")
    assert await stats(qs) == dict.fromkeys(STATUSES, 0)


def test_008_counts_an_existing_table_once_however_often_it_is_applied(
    empty_database: str,
) -> None:
    for path in sorted(MIGRATIONS.glob("[0-9][0-9][0-9]_*.sql")):
        if path.name < "008":
            psql(empty_database, "", "-q", "-f", str(path))
    with psycopg.connect(empty_database, autocommit=True) as db:
        for status in ("QUEUED", "QUEUED", "SUCCEEDED", "FAILED"):
            insert_job(db, status=status)
        for _ in range(2):
            psql(empty_database, "", "-q", "-f", str(MIGRATIONS / "008_job_counts.sql"))
        insert_job(db, status="RETRY")
        rows = db.execute(
            "SELECT status, sum(n)::int FROM ingestion_job_counts GROUP BY status"
        ).fetchall()
        assert {status: n for status, n in rows if n} == {
            status: n for status, n in counted(db).items() if n
        }


async def test_a_recount_sees_what_was_written_with_the_triggers_off(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    insert_job(db)
    with db.transaction():  # as pg_restore --disable-triggers writes
        db.execute("SET LOCAL session_replication_role = replica")
        insert_job(db, status="FAILED")
    assert (await stats(qs))["FAILED"] == 0
    db.execute("SELECT recount_job_counts()")
    assert await stats(qs) == counted(db)


def test_the_stats_query_reads_no_finished_job(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO ingestion_jobs (status, input, idempotency_key, completed_at)"
            " SELECT 'SUCCEEDED', jsonb_build_object('n', g), 'k' || g, now()"
            " FROM generate_series(1, 50000) g"
        )
        db.execute("VACUUM ANALYZE ingestion_jobs")
        db.execute("SELECT fold_job_counts()")
        plan = db.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries()["queue_stats"],
            {"queue": None, "heartbeat_timeout": 120.0},
        ).fetchone()
    assert plan is not None
    top = plan[0][0]["Plan"]
    buffers = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    # A count of the table would read its 50,000 rows: over a thousand pages.
    assert buffers < 30, buffers


def summed(db: psycopg.Connection[Any]) -> dict[str, int]:
    rows = db.execute(
        "SELECT status, sum(n)::int FROM ingestion_job_counts GROUP BY status"
    ).fetchall()
    return {status: n for status, n in rows if n}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("SELECT fold_job_counts()", "SELECT recount_job_counts()"),
        ("SELECT recount_job_counts()", "SELECT recount_job_counts()"),
        ("SELECT fold_job_counts()", "TRUNCATE ingestion_jobs"),
    ],
)
def test_a_recount_or_truncate_beside_a_fold_or_recount_counts_each_job_once(
    database_url: str, first: str, second: str
) -> None:
    """The second statement starts while the first is uncommitted (the window in which a fold's
    sums, or another recount's count, once survived beside a full count: twice the real
    numbers), and ends only after the first commits."""
    with (
        psycopg.connect(database_url, autocommit=True) as db,
        psycopg.connect(database_url) as holder,
        psycopg.connect(database_url, autocommit=True) as other,
    ):
        for status in ("QUEUED", "QUEUED", "RUNNING", "SUCCEEDED"):
            insert_job(db, status=status)  # one delta row each: something to fold
        holder.execute(first)  # its transaction stays open
        pid = other.info.backend_pid
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(other.execute, second)
            wait_for(
                lambda: (
                    db.execute(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                        (pid,),
                    ).fetchone()
                    == (True,)
                ),
                what="the second statement waiting on the first",
            )
            holder.commit()
            done.result(timeout=30)
        assert summed(db) == {status: n for status, n in counted(db).items() if n}


def test_stale_running_counts_a_beat_that_met_a_lock_as_the_sweep_does(
    db: psycopg.Connection[Any],
) -> None:
    # Both silent in their rows for 60 s; one was beaten a moment ago while its row was locked
    # (009's deferred beats), and a beat of an earlier claim of the other counts for nothing.
    beaten = insert_job(db, status="RUNNING", lease=2, seconds_ago={"last_heartbeat_at": 60})
    silent = insert_job(db, status="RUNNING", lease=2, seconds_ago={"last_heartbeat_at": 60})
    db.execute(
        "INSERT INTO ingestion_job_deferred_beats VALUES (%s, 2, clock_timestamp()),"
        " (%s, 1, clock_timestamp())",
        (beaten["id"], silent["id"]),
    )
    stats = db.execute(queries()["queue_stats"], {"queue": None, "heartbeat_timeout": 6.0})
    assert stats.fetchone()[1] == 1  # type: ignore[index]
    released = db.execute("SELECT job_id FROM release_stale_jobs(6, 1800)").fetchall()
    assert released == [(silent["id"],)]
