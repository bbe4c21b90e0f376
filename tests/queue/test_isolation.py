"""No job harms another: a row lock held on one job stalls nothing else, and the reaper does not
release a job whose beats met that lock (issue 11, item 1; docs/state-machine.md, "A beat that
finds its row locked")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.jobs import fetch_job, insert_job

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]


@pytest.fixture
def locker(database_url: str) -> Iterator[Conn]:
    """A second session, as an operator's psql or a StoreAdvert in progress would be."""
    with psycopg.connect(database_url) as conn:
        yield conn
        conn.rollback()


def beat(db: Conn, *jobs: dict[str, Any]) -> dict[Any, str]:
    # On main this waited on the locked row for as long as it was held: the statement timeout
    # turns that into a failure instead of a hang.
    db.execute("SET statement_timeout = '5s'")
    rows = db.execute(
        "SELECT job_id, action FROM update_job_heartbeat(%s::uuid[], %s::bigint[], %s, %s)",
        (
            [job["id"] for job in jobs],
            [job["lease"] for job in jobs],
            ["transcription"] * len(jobs),
            [0.5] * len(jobs),
        ),
    ).fetchall()
    return dict(rows)


def test_a_locked_row_does_not_stall_the_beats_of_other_jobs(db: Conn, locker: Conn) -> None:
    locked, b, c = (
        insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 30}) for _ in range(3)
    )
    locker.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR SHARE", (locked["id"],))

    actions = beat(db, locked, b, c)

    assert actions == {locked["id"]: "deferred", b["id"]: "continue", c["id"]: "continue"}
    for job in (b, c):
        assert fetch_job(db, job["id"])["stage"] == "transcription"
    # The locked job's beat is kept beside its row, which it could not write.
    [(lease, age)] = db.execute(
        "SELECT lease, extract(epoch FROM clock_timestamp() - beat_at) "
        "FROM ingestion_job_deferred_beats WHERE job_id = %s",
        (locked["id"],),
    ).fetchall()
    assert lease == locked["lease"] and age < 5


def test_a_locked_job_hears_cancel_and_lease_lost_from_its_committed_row(
    db: Conn, locker: Conn
) -> None:
    cancelled = insert_job(db, status="RUNNING")
    db.execute("SELECT cancel_job(%s)", (cancelled["id"],))
    moved_on = insert_job(db, status="RUNNING", lease=3)
    locker.execute(
        "SELECT 1 FROM ingestion_jobs WHERE id = ANY(%s) FOR UPDATE",
        ([cancelled["id"], moved_on["id"]],),
    )

    stale_claim = {**moved_on, "lease": 2}
    assert beat(db, cancelled, stale_claim) == {
        cancelled["id"]: "cancel",
        moved_on["id"]: "lease_lost",
    }
    [(count,)] = db.execute(
        "SELECT count(*) FROM ingestion_job_deferred_beats WHERE job_id = %s",
        (moved_on["id"],),
    ).fetchall()
    assert count == 0


def test_the_sweep_counts_a_beat_that_met_a_lock(db: Conn, locker: Conn) -> None:
    # Silent in its row for 60 s, but beaten a moment ago while its row was locked.
    beaten = insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 60})
    silent = insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 60})
    locker.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR SHARE", (beaten["id"],))
    assert beat(db, beaten) == {beaten["id"]: "deferred"}
    locker.rollback()  # the lock goes away before the sweep

    released = db.execute("SELECT job_id FROM release_stale_jobs(6, 1800)").fetchall()

    assert released == [(silent["id"],)]
    assert fetch_job(db, beaten["id"])["status"] == "RUNNING"
    # Its next beat lands in the row as usual.
    assert beat(db, beaten) == {beaten["id"]: "continue"}


def test_the_sweep_forgets_deferred_beats_older_than_the_timeout(db: Conn) -> None:
    job = insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 60})
    db.execute(
        "INSERT INTO ingestion_job_deferred_beats VALUES (%s, %s, clock_timestamp() - '30 s'::interval)",
        (job["id"], job["lease"]),
    )

    released = db.execute("SELECT job_id FROM release_stale_jobs(6, 1800)").fetchall()

    assert released == [(job["id"],)]
    assert db.execute("SELECT count(*) FROM ingestion_job_deferred_beats").fetchone() == (0,)


def test_a_beat_of_another_claim_does_not_keep_a_job(db: Conn) -> None:
    job = insert_job(db, status="RUNNING", lease=2, seconds_ago={"last_heartbeat_at": 60})
    db.execute(
        "INSERT INTO ingestion_job_deferred_beats VALUES (%s, 1, clock_timestamp())", (job["id"],)
    )

    released = db.execute("SELECT job_id FROM release_stale_jobs(6, 1800)").fetchall()

    assert released == [(job["id"],)]
