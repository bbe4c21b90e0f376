-- 004: heartbeats, stages and progress; the job state machine; the monitoring views.
--
-- This file holds the columns that heartbeats added to the job table, then includes the state
-- machine: one file per transition under job_queue/ (docs/state-machine.md maps them). Every
-- transition is one conditional statement inside a function there, so that the queue service,
-- an operator in psql and the tests all go through the same rules. The functions that the hot
-- path calls take arrays: one call (one round trip, one statement) handles a whole batch of
-- jobs, and the scalar overloads exist for people at a psql prompt.
--
-- Every time is the database clock (clock_timestamp(), read once per call): workers send no
-- timestamps, so a worker with a wrong clock cannot make a lease look fresh or stale.
--
-- Safe to re-apply, also under load: columns are added when missing, functions are replaced in
-- place, views are re-created, and no lock is waited on for more than 5 s. The schema part
-- below is released and never edited again; a new column goes in a new numbered migration.
-- The included files are edited in place: the queue service checksums this file with what it
-- includes (queue_service/migrate.py), so changing one re-applies 004.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/004_job_queue_heartbeat.sql
--
-- `\ir` includes a file relative to this one, from any working directory. It is the only psql
-- meta-command these files may use: queue_service/migrate.py expands it and refuses any other.

BEGIN;

-- Never queue behind a long transaction while holding locks the running queue needs: fail
-- the migration instead, and let it be retried.
SET LOCAL lock_timeout = '5s';

-- Columns are added only when missing: ALTER TABLE takes an ACCESS EXCLUSIVE lock on the job
-- table even when every column exists, which would stall a running queue for a no-op re-apply.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'ingestion_jobs'
                     AND column_name = 'processing_completed_at') THEN
        ALTER TABLE ingestion_jobs
            ADD COLUMN IF NOT EXISTS last_heartbeat_at       timestamptz,
            -- claimed, validating_input, pipeline_running, <pipeline stage>, succeeded, failed,
            -- released, released_stale, cancelled.
            ADD COLUMN IF NOT EXISTS stage                   text,
            ADD COLUMN IF NOT EXISTS progress                double precision NOT NULL DEFAULT 0,
            -- Start and end of the latest attempt: job_timing_stats measures these.
            ADD COLUMN IF NOT EXISTS processing_started_at   timestamptz,
            ADD COLUMN IF NOT EXISTS processing_completed_at timestamptz;
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ingestion_jobs_progress_check') THEN
        ALTER TABLE ingestion_jobs ADD CONSTRAINT ingestion_jobs_progress_check
            CHECK (progress >= 0 AND progress <= 1);
    END IF;
END
$$;

-- The state machine. Functions are replaced in place (CREATE OR REPLACE keeps each function's
-- identity, so calls in flight while this file is re-applied keep working); it cannot change a
-- function's arguments or result type, so such a change puts DROP FUNCTION IF EXISTS <the old
-- signature> before the CREATE in the function's file. Shared pieces come first: a LANGUAGE sql
-- function is checked against what exists when it is created.
\ir job_queue/notify.sql
\ir job_queue/settle.sql
\ir job_queue/enqueue.sql
\ir job_queue/claim.sql
\ir job_queue/heartbeat.sql
\ir job_queue/complete.sql
\ir job_queue/fail.sql
\ir job_queue/release.sql
\ir job_queue/cancel.sql
\ir job_queue/retry.sql
\ir job_queue/release_stale.sql
\ir job_queue/views.sql

COMMIT;
