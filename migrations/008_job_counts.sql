-- 008: the number of jobs per queue and status, kept as the jobs change, so that GetQueueStats
-- (and the REST stats behind the dashboard, polled every few seconds) reads a few rows instead
-- of counting the whole table: finished jobs stay until retention deletes them, and counting
-- 300,000 rows took over 100 ms a call.
--
-- ingestion_job_counts holds signed deltas, not one row per (queue, status): every statement
-- that inserts, updates or deletes jobs appends one row per (queue, status) whose count it
-- changed, from the statement's transition tables. Appending never waits: one counter row per
-- status, updated by every claim and complete, would serialise every transaction of the hot
-- path on it until commit. The count is the sum of a status's rows; fold_job_counts() (the
-- queue service runs it every few seconds, queue_service/upkeep.py) replaces them by their sums,
-- so the table stays a few rows per queue and status plus what arrived since the last fold.
--
-- Every write to ingestion_jobs is counted, an operator's UPDATE or DELETE in psql included;
-- TRUNCATE empties the counts. Statement triggers with transition tables cannot be limited to
-- the status and queue columns, so a heartbeat's UPDATE runs the update trigger too: its rows
-- keep their status, the sums are zero, and it appends nothing.
--
-- Safe to re-apply: the table is created when missing, the functions are replaced, and the
-- triggers are created, and the counts taken from the table as it is, only when missing (their
-- creation locks out writes to the job table until this file commits, so no change is counted
-- twice or missed).
--
--   psql -v ON_ERROR_STOP=1 -f migrations/008_job_counts.sql
--
-- On a large table the first apply counts it once, under that lock (about 0.1 s per 300,000
-- rows).

BEGIN;

SET LOCAL lock_timeout = '5s';

CREATE TABLE IF NOT EXISTS ingestion_job_counts (
    queue  text   NOT NULL,
    status text   NOT NULL,
    -- Jobs that this row adds to (queue, status), or removes when negative.
    n      bigint NOT NULL
);

CREATE OR REPLACE FUNCTION ingestion_job_counts_inserted()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO ingestion_job_counts (queue, status, n)
    SELECT queue, status, count(*) FROM inserted GROUP BY queue, status;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ingestion_job_counts_updated()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO ingestion_job_counts (queue, status, n)
    SELECT queue, status, sum(n)
    FROM (SELECT queue, status, -1 AS n FROM before_update
          UNION ALL
          SELECT queue, status, 1 FROM after_update) changed
    GROUP BY queue, status
    HAVING sum(n) <> 0;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION ingestion_job_counts_deleted()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO ingestion_job_counts (queue, status, n)
    SELECT queue, status, -count(*) FROM deleted GROUP BY queue, status;
    RETURN NULL;
END
$$;

-- TRUNCATE and recount_job_counts() replace every row of the counts, so each first takes the
-- counts table in EXCLUSIVE mode: a fold in flight (or another recount) holds row locks on rows
-- it deleted and has inserted its sums, which a DELETE running beside it would neither see nor
-- remove; the sums would survive beside a full count and the stats would double. EXCLUSIVE
-- waits for those to commit and keeps new folds, and the triggers' appends (they would wait for
-- the job table anyway), out until the caller's transaction ends. Reads are not blocked.
CREATE OR REPLACE FUNCTION ingestion_job_counts_truncated()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    LOCK TABLE ingestion_job_counts IN EXCLUSIVE MODE;
    DELETE FROM ingestion_job_counts;
    RETURN NULL;
END
$$;

-- Replaces the deltas by their sums, one row per (queue, status) that has jobs. Rows that
-- arrive meanwhile are not seen by the DELETE and stay for the next fold; two folds at once
-- do not count a row twice (the second skips the rows the first deleted). Returns the number
-- of rows it folded.
CREATE OR REPLACE FUNCTION fold_job_counts()
RETURNS bigint
LANGUAGE sql
AS $$
    WITH folded AS (
        DELETE FROM ingestion_job_counts RETURNING queue, status, n
    ), summed AS (
        INSERT INTO ingestion_job_counts (queue, status, n)
        SELECT queue, status, sum(n) FROM folded GROUP BY queue, status HAVING sum(n) <> 0
    )
    SELECT count(*) FROM folded
$$;

-- Counts the job table afresh: what 008 does when it creates the triggers, and what an operator
-- runs after writing jobs with the triggers off (pg_restore --disable-triggers,
-- session_replication_role = replica), which the counts cannot have seen:
--   SELECT recount_job_counts();
-- Writes to the job table, folds and other recounts wait until the caller's transaction ends
-- (reads do not), so the count is exact: about 0.1 s per 300,000 jobs. The job table is locked
-- first, in the order every writer takes the two tables (its trigger appends to the counts).
CREATE OR REPLACE FUNCTION recount_job_counts()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    LOCK TABLE ingestion_jobs IN SHARE MODE;
    LOCK TABLE ingestion_job_counts IN EXCLUSIVE MODE;
    DELETE FROM ingestion_job_counts;
    INSERT INTO ingestion_job_counts (queue, status, n)
    SELECT queue, status, count(*) FROM ingestion_jobs GROUP BY queue, status;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'ingestion_jobs'::regclass
                     AND tgname = 'ingestion_job_counts_inserted') THEN
        CREATE TRIGGER ingestion_job_counts_inserted
            AFTER INSERT ON ingestion_jobs REFERENCING NEW TABLE AS inserted
            FOR EACH STATEMENT EXECUTE FUNCTION ingestion_job_counts_inserted();
        CREATE TRIGGER ingestion_job_counts_updated
            AFTER UPDATE ON ingestion_jobs
            REFERENCING OLD TABLE AS before_update NEW TABLE AS after_update
            FOR EACH STATEMENT EXECUTE FUNCTION ingestion_job_counts_updated();
        CREATE TRIGGER ingestion_job_counts_deleted
            AFTER DELETE ON ingestion_jobs REFERENCING OLD TABLE AS deleted
            FOR EACH STATEMENT EXECUTE FUNCTION ingestion_job_counts_deleted();
        CREATE TRIGGER ingestion_job_counts_truncated
            AFTER TRUNCATE ON ingestion_jobs
            FOR EACH STATEMENT EXECUTE FUNCTION ingestion_job_counts_truncated();
        PERFORM recount_job_counts();
    END IF;
END
$$;

COMMIT;
