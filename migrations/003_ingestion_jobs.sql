-- 003: the ingestion job table.
--
-- One row per job. The queue service is the only client; every state change is one conditional
-- statement in the functions of 004, so this file holds only the data and its invariants.
-- Safe to re-apply: every object is created only when missing.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/003_ingestion_jobs.sql

BEGIN;

-- gen_random_uuid() is core since PostgreSQL 13; nothing to install.

CREATE TABLE IF NOT EXISTS ingestion_jobs (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    queue            text        NOT NULL DEFAULT 'default',
    status           text        NOT NULL DEFAULT 'QUEUED',
    -- Higher runs first; ties run oldest first.
    priority         integer     NOT NULL DEFAULT 0,
    -- Claims so far. A claim increments it, so the first failure leaves attempts = 1.
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL DEFAULT 5,
    -- Not claimed before this time: the backoff of a RETRY, or a scheduled job.
    run_after        timestamptz NOT NULL DEFAULT now(),
    locked_at        timestamptz,
    -- The last worker that claimed the job; kept after it finishes, so an operator can see who
    -- ran it (the checklist's Test 4 reads it on SUCCEEDED jobs).
    locked_by        text,
    input            jsonb       NOT NULL,
    output           jsonb,
    idempotency_key  text        NOT NULL,
    last_error       text,
    error_code       text,
    -- One entry per failed attempt: {"attempt", "time", "code", "message"}.
    errors           jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- The fencing token: every claim takes lease + 1. Heartbeat, complete and fail carry the
    -- lease they were given and change nothing once it is no longer current, so a worker that
    -- was presumed dead and comes back cannot finish a job that someone else now owns.
    lease            bigint      NOT NULL DEFAULT 0,
    -- An operator cancelled a RUNNING job: its worker is told by its next heartbeat answer.
    cancel_requested_at timestamptz,
    completed_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Invariants are constraints, so no code path (nor an operator's UPDATE) can break them.
-- Each is added only when missing, which keeps the file re-appliable.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ingestion_jobs_status_check') THEN
        ALTER TABLE ingestion_jobs ADD CONSTRAINT ingestion_jobs_status_check
            CHECK (status IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'RETRY', 'FAILED', 'CANCELLED'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ingestion_jobs_attempts_check') THEN
        ALTER TABLE ingestion_jobs ADD CONSTRAINT ingestion_jobs_attempts_check
            CHECK (attempts >= 0 AND max_attempts BETWEEN 1 AND 100);
    END IF;
    -- A finished job has a completion time. (The converse is not enforced: an operator who
    -- sets a finished job back to RUNNING by hand, as the checklist's Test 5 does, must not be
    -- refused; the next transition clears it.)
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ingestion_jobs_finished_check') THEN
        ALTER TABLE ingestion_jobs ADD CONSTRAINT ingestion_jobs_finished_check
            CHECK (status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED') OR completed_at IS NOT NULL);
    END IF;
    -- A running job is locked by someone since some time: the stale sweep depends on it.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ingestion_jobs_running_check') THEN
        ALTER TABLE ingestion_jobs ADD CONSTRAINT ingestion_jobs_running_check
            CHECK (status <> 'RUNNING' OR locked_at IS NOT NULL);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ingestion_jobs_input_check') THEN
        ALTER TABLE ingestion_jobs ADD CONSTRAINT ingestion_jobs_input_check
            CHECK (jsonb_typeof(input) = 'object');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ingestion_jobs_errors_check') THEN
        ALTER TABLE ingestion_jobs ADD CONSTRAINT ingestion_jobs_errors_check
            CHECK (jsonb_typeof(errors) = 'array');
    END IF;
END
$$;

-- Idempotent enqueue: one row per key, enforced by the database, not by a read-then-insert.
CREATE UNIQUE INDEX IF NOT EXISTS ingestion_jobs_idempotency_key_idx
    ON ingestion_jobs (idempotency_key);

-- The claim scan: runnable jobs of a queue by priority, then by how long they have been due.
-- run_after is in the key, not only in the filter, so the scan starts at the due jobs: RETRY jobs
-- still in backoff (thousands, during an outage of a dependency) are never walked over. Partial,
-- so finished jobs (the bulk of the table over time) cost the hot path nothing.
CREATE INDEX IF NOT EXISTS ingestion_jobs_runnable_idx
    ON ingestion_jobs (queue, priority DESC, run_after, id)
    WHERE status IN ('QUEUED', 'RETRY');

-- The stale sweep and the running monitor look only at RUNNING jobs.
CREATE INDEX IF NOT EXISTS ingestion_jobs_running_idx
    ON ingestion_jobs (locked_at)
    WHERE status = 'RUNNING';

-- Listing newest first, optionally by status.
CREATE INDEX IF NOT EXISTS ingestion_jobs_status_created_idx
    ON ingestion_jobs (status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS ingestion_jobs_created_idx
    ON ingestion_jobs (created_at DESC, id DESC);

COMMIT;
