"""The database's side of a fault run's history: a trigger on the job table that writes down
every change of a job's status or lease (and every deletion) with the database clock, and the
reads that turn it and the jobs' final rows into `Transition`s and `FinalState`s.

The trigger is the test's own instrument, installed in the test's database only (never a
migration): it sees every claim, settlement and stale release whoever made it, survives the
kill of any process but PostgreSQL's own, and costs heartbeats nothing (its WHEN clause skips
updates that change neither status nor lease).
"""

from __future__ import annotations

from typing import Any

import psycopg

from tests.faults.history import FinalState, Transition

INSTALL = """
CREATE TABLE IF NOT EXISTS fault_journal (
    seq           bigserial PRIMARY KEY,
    job_id        uuid NOT NULL,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    status_before text,
    status        text,
    lease_before  bigint,
    lease         bigint,
    locked_by     text,
    error_code    text
);

CREATE OR REPLACE FUNCTION fault_journal_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO fault_journal (job_id, status, lease, locked_by, error_code)
        VALUES (NEW.id, NEW.status, NEW.lease, NEW.locked_by, NEW.error_code);
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO fault_journal
            (job_id, status_before, status, lease_before, lease, locked_by, error_code)
        VALUES (NEW.id, OLD.status, NEW.status, OLD.lease, NEW.lease, NEW.locked_by,
                NEW.error_code);
    ELSE
        INSERT INTO fault_journal (job_id, status_before, lease_before, locked_by)
        VALUES (OLD.id, OLD.status, OLD.lease, OLD.locked_by);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS fault_journal_changes ON ingestion_jobs;
CREATE TRIGGER fault_journal_changes
    AFTER UPDATE ON ingestion_jobs FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.lease IS DISTINCT FROM NEW.lease)
    EXECUTE FUNCTION fault_journal_write();
DROP TRIGGER IF EXISTS fault_journal_rows ON ingestion_jobs;
CREATE TRIGGER fault_journal_rows
    AFTER INSERT OR DELETE ON ingestion_jobs FOR EACH ROW
    EXECUTE FUNCTION fault_journal_write();
"""


def install(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(INSTALL)


def transitions(conn: psycopg.Connection[Any]) -> list[Transition]:
    rows = conn.execute(
        "SELECT job_id::text, extract(epoch FROM at)::float8, status_before, status,"
        " lease_before, lease, locked_by, error_code FROM fault_journal ORDER BY seq"
    ).fetchall()
    return [Transition(*row) for row in rows]


def final_states(conn: psycopg.Connection[Any]) -> dict[str, FinalState]:
    rows = conn.execute(
        "SELECT id::text, status, lease, attempts, locked_by FROM ingestion_jobs"
    ).fetchall()
    return {row[0]: FinalState(*row) for row in rows}


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM ingestion_jobs GROUP BY status").fetchall()
    return {status: int(count) for status, count in rows}
