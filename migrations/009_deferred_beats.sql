-- 009: beats that arrived while their job's row was locked.
--
-- A heartbeat never waits on a row lock (update_job_heartbeat, job_queue/heartbeat.sql): a job
-- whose row another transaction holds (a StoreAdvert's FOR SHARE, an operator's open psql
-- transaction, a Complete in flight) is skipped, so one lock cannot stall every other job's
-- beat. The skipped beat is not dropped: its time goes here instead, keyed by the claim it
-- belongs to, and the stale rule counts it as the job's latest heartbeat (release_stale_jobs,
-- job_queue/release_stale.sql). So a job whose worker beats on time is never released because
-- its row was locked when the beats came; once the lock is gone, its next beat lands in the job
-- row as usual.
--
-- No foreign key to ingestion_jobs: a key check would take FOR KEY SHARE on the job row, which
-- waits on the very FOR UPDATE this table exists to sidestep. Rows of a claim that has ended
-- stop mattering at once (the stale rule joins on the current lease) and are deleted by the
-- stale sweep once older than the heartbeat timeout.
--
-- Safe to re-apply: the table is created only when missing.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/009_deferred_beats.sql

BEGIN;

SET LOCAL lock_timeout = '5s';

CREATE TABLE IF NOT EXISTS ingestion_job_deferred_beats (
    job_id  uuid        NOT NULL,
    lease   bigint      NOT NULL,
    -- The database clock when the last skipped beat of this claim arrived.
    beat_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, lease)
);

COMMIT;
