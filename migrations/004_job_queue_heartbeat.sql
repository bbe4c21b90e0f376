-- 004: heartbeats, stages and progress; the job state machine; the monitoring views.
--
-- Every transition is one conditional statement inside a function below, so that the queue
-- service, an operator in psql and the tests all go through the same rules. The functions
-- that the hot path calls take arrays: one call (one round trip, one statement) handles a whole
-- batch of jobs, and the scalar overloads exist for people at a psql prompt.
--
-- Every time is the database clock (clock_timestamp(), read once per call): workers send no
-- timestamps, so a worker with a wrong clock cannot make a lease look fresh or stale.
--
-- Safe to re-apply, also under load: columns are added when missing, functions are replaced in
-- place, views are re-created, and no lock is waited on for more than 5 s.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/004_job_queue_heartbeat.sql

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

-- Functions are replaced in place (CREATE OR REPLACE keeps each function's identity, so calls in
-- flight while this file is re-applied keep working). A change of a function's signature or
-- result type belongs in a new numbered migration that drops the old one.

-- ---------------------------------------------------------------------------------------------
-- Enqueue. The idempotency key is the caller's, or a hash of queue and input (jsonb's text form
-- is canonical: key order and white space do not change it). Conflicts are resolved by the
-- unique index, never by a read-then-insert, so any number of concurrent enqueues of one key
-- make one row and all of them get its id. Each new job wakes waiting claimers (NOTIFY).
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION ingestion_job_key(p_queue text, p_input jsonb, p_key text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(
        nullif(p_key, ''),
        encode(sha256(convert_to(p_queue || E'\n' || p_input::text, 'UTF8')), 'hex')
    )
$$;

CREATE OR REPLACE FUNCTION enqueue_jobs(
    p_inputs        jsonb[],
    p_queues        text[],
    p_priorities    integer[],
    p_max_attempts  integer[],
    p_keys          text[],
    p_run_afters    timestamptz[]
)
RETURNS TABLE (job ingestion_jobs, already_existed boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_inserted text[];
BEGIN
    WITH req AS (
        SELECT r.input,
               coalesce(nullif(r.queue, ''), 'default') AS queue,
               coalesce(r.priority, 0) AS priority,
               coalesce(nullif(r.max_attempts, 0), 5) AS max_attempts,
               ingestion_job_key(coalesce(nullif(r.queue, ''), 'default'), r.input, r.key) AS key,
               coalesce(r.run_after, v_now) AS run_after
        FROM unnest(p_inputs, p_queues, p_priorities, p_max_attempts, p_keys, p_run_afters)
             AS r(input, queue, priority, max_attempts, key, run_after)
    ), ins AS (
        INSERT INTO ingestion_jobs AS j
            (queue, priority, max_attempts, input, idempotency_key, run_after, created_at, updated_at)
        SELECT queue, priority, max_attempts, input, key, run_after, v_now, v_now FROM req
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING j.idempotency_key, j.queue
    ), woken AS (
        SELECT pg_notify('ingestion_jobs', q.queue) FROM (SELECT DISTINCT queue FROM ins) q
    )
    SELECT array_agg(ins.idempotency_key) INTO v_inserted
    FROM ins LEFT JOIN (SELECT count(*) FROM woken) w ON true;

    -- A new statement, so a new snapshot: it sees rows that a concurrent enqueue of the same
    -- key committed while the INSERT above waited on it.
    RETURN QUERY
    SELECT j, NOT (k.key = ANY (coalesce(v_inserted, '{}')) AND k.ord = k.first_ord)
    FROM (
        SELECT key, ord, min(ord) OVER (PARTITION BY key) AS first_ord
        FROM unnest(
            ARRAY(SELECT ingestion_job_key(coalesce(nullif(q, ''), 'default'), i, k)
                  FROM unnest(p_queues, p_inputs, p_keys) AS x(q, i, k))
        ) WITH ORDINALITY AS t(key, ord)
    ) k
    JOIN ingestion_jobs j ON j.idempotency_key = k.key
    ORDER BY k.ord;
END
$$;

CREATE OR REPLACE FUNCTION enqueue_job(
    p_input         jsonb,
    p_queue         text        DEFAULT 'default',
    p_priority      integer     DEFAULT 0,
    p_max_attempts  integer     DEFAULT 5,
    p_key           text        DEFAULT NULL,
    p_run_after     timestamptz DEFAULT NULL
)
RETURNS TABLE (job_id uuid, status text, already_existed boolean)
LANGUAGE sql
AS $$
    SELECT (e.job).id, (e.job).status, e.already_existed
    FROM enqueue_jobs(ARRAY[p_input], ARRAY[p_queue], ARRAY[p_priority], ARRAY[p_max_attempts],
                      ARRAY[p_key], ARRAY[p_run_after]) e
$$;

-- ---------------------------------------------------------------------------------------------
-- Claim: one statement. The CTE picks runnable jobs with FOR UPDATE SKIP LOCKED (concurrent
-- claimers skip each other's rows instead of waiting) and LIMIT inside the CTE, so exactly the
-- picked rows are updated: never more than p_limit. Each claim increments attempts and takes a
-- new lease.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION claim_jobs(
    p_worker_id text,
    p_limit     integer DEFAULT 1,
    p_queue     text    DEFAULT 'default'
)
RETURNS SETOF ingestion_jobs
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT c.id
        FROM ingestion_jobs c
        WHERE c.queue = p_queue
          AND c.status IN ('QUEUED', 'RETRY')
          AND c.run_after <= v_now
        ORDER BY c.priority DESC, c.run_after, c.id
        LIMIT greatest(p_limit, 0)
        FOR UPDATE SKIP LOCKED
    )
    UPDATE ingestion_jobs j
    SET status                  = 'RUNNING',
        attempts                = j.attempts + 1,
        lease                   = j.lease + 1,
        locked_at               = v_now,
        locked_by               = p_worker_id,
        stage                   = 'claimed',
        progress                = 0,
        last_heartbeat_at       = v_now,
        processing_started_at   = v_now,
        processing_completed_at = NULL,
        completed_at            = NULL,
        cancel_requested_at     = NULL,
        updated_at              = v_now
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.*;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Heartbeat: records liveness, stage and progress of RUNNING jobs whose lease is current.
-- Answers per job: 'continue', 'cancel' (an operator asked to cancel it) or 'lease_lost' (the
-- job was released, re-claimed, finished or deleted: the worker must stop and not complete it).
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION update_job_heartbeat(
    p_job_ids  uuid[],
    p_leases   bigint[],
    p_stages   text[],
    p_progress double precision[]
)
RETURNS TABLE (job_id uuid, action text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH beat AS (
        -- The latest beat of each claim wins when one batch carries several.
        SELECT DISTINCT ON (b.id, b.lease) b.id, b.lease, b.stage, b.progress
        FROM unnest(p_job_ids, p_leases, p_stages, p_progress) WITH ORDINALITY
             AS b(id, lease, stage, progress, ord)
        ORDER BY b.id, b.lease, b.ord DESC
    ), upd AS (
        UPDATE ingestion_jobs j
        SET last_heartbeat_at = v_now,
            stage             = coalesce(nullif(beat.stage, ''), j.stage),
            progress          = least(1, greatest(0, coalesce(beat.progress, j.progress))),
            updated_at        = v_now
        FROM beat
        WHERE j.id = beat.id AND j.lease = beat.lease AND j.status = 'RUNNING'
        RETURNING j.id, j.lease, j.cancel_requested_at IS NOT NULL AS cancel
    )
    SELECT r.id,
           CASE WHEN u.id IS NULL THEN 'lease_lost'
                WHEN u.cancel THEN 'cancel'
                ELSE 'continue' END
    FROM unnest(p_job_ids, p_leases) WITH ORDINALITY AS r(id, lease, ord)
    LEFT JOIN upd u ON u.id = r.id AND u.lease = r.lease
    ORDER BY r.ord;
END
$$;

CREATE OR REPLACE FUNCTION update_job_heartbeat(
    p_job_id   uuid,
    p_lease    bigint,
    p_stage    text             DEFAULT NULL,
    p_progress double precision DEFAULT NULL
)
RETURNS text
LANGUAGE sql
AS $$
    SELECT h.action
    FROM update_job_heartbeat(ARRAY[p_job_id], ARRAY[p_lease], ARRAY[p_stage], ARRAY[p_progress]) h
$$;

-- ---------------------------------------------------------------------------------------------
-- Complete: RUNNING with the current lease -> SUCCEEDED. Outcome per job: 'ok', 'lease_lost'
-- (exists, but not RUNNING under this lease: nothing changed) or 'not_found'.
-- A job whose cancellation was requested still completes if its worker finished first: the work
-- is done and its output is real.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION complete_job(
    p_job_ids uuid[],
    p_leases  bigint[],
    p_outputs jsonb[]
)
RETURNS TABLE (job_id uuid, outcome text, status text, job ingestion_jobs)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH done AS (
        SELECT DISTINCT ON (d.id, d.lease) d.id, d.lease, d.output
        FROM unnest(p_job_ids, p_leases, p_outputs) AS d(id, lease, output)
    ), upd AS (
        UPDATE ingestion_jobs j
        SET status                  = 'SUCCEEDED',
            output                  = coalesce(done.output, '{}'::jsonb),
            stage                   = 'succeeded',
            progress                = 1,
            completed_at            = v_now,
            processing_completed_at = v_now,
            cancel_requested_at     = NULL,
            updated_at              = v_now
        FROM done
        WHERE j.id = done.id AND j.lease = done.lease AND j.status = 'RUNNING'
        RETURNING j.id, j.lease, j.status, j AS job
    )
    -- The updated row for an OK entry; the current one (a separate snapshot of the same
    -- statement, so before any change) otherwise, or NULL when there is none. A job already
    -- SUCCEEDED under this very lease was completed by this caller (only the lease's owner can
    -- complete under it): a repeated Complete, after an answer lost in transit, is 'ok' too.
    SELECT r.id,
           CASE WHEN u.id IS NOT NULL THEN 'ok'
                WHEN cur.id IS NULL THEN 'not_found'
                WHEN cur.status = 'SUCCEEDED' AND cur.lease = r.lease THEN 'ok'
                ELSE 'lease_lost' END,
           coalesce(u.status, cur.status),
           CASE WHEN u.id IS NOT NULL THEN u.job WHEN cur.id IS NOT NULL THEN cur END
    FROM unnest(p_job_ids, p_leases) WITH ORDINALITY AS r(id, lease, ord)
    LEFT JOIN upd u ON u.id = r.id AND u.lease = r.lease
    LEFT JOIN ingestion_jobs cur ON cur.id = r.id
    ORDER BY r.ord;
END
$$;

CREATE OR REPLACE FUNCTION complete_job(
    p_job_id uuid,
    p_lease  bigint,
    p_output jsonb DEFAULT '{}'::jsonb
)
RETURNS TABLE (outcome text, job ingestion_jobs)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT c.outcome, c.job FROM complete_job(ARRAY[p_job_id], ARRAY[p_lease], ARRAY[p_output]) c;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Fail: records a failed attempt of a RUNNING job with the current lease.
--   cancellation requested           -> CANCELLED
--   retryable and attempts remain    -> RETRY, run_after = now + backoff (or p_retry_after)
--   otherwise                        -> FAILED (the dead letter)
-- Backoff is exponential with equal jitter: d = min(cap, base * 2^(attempts-1)), and the delay is
-- uniform in [d/2, d], so retries of jobs that failed together spread out and run_after is
-- always in the future. Every failure appends {attempt, time, code, message} to errors.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION fail_job(
    p_job_ids       uuid[],
    p_leases        bigint[],
    p_codes         text[],
    p_messages      text[],
    p_retryable     boolean[],
    p_retry_after   double precision[],
    p_backoff_base  double precision DEFAULT 10,
    p_backoff_max   double precision DEFAULT 3600
)
RETURNS TABLE (job_id uuid, outcome text, status text, job ingestion_jobs)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH req AS (
        SELECT DISTINCT ON (f.id, f.lease) f.id, f.lease,
               coalesce(nullif(f.code, ''), 'UNKNOWN_ERROR') AS code,
               coalesce(f.message, '') AS message,
               coalesce(f.retryable, true) AS retryable,
               f.retry_after
        FROM unnest(p_job_ids, p_leases, p_codes, p_messages, p_retryable, p_retry_after)
             AS f(id, lease, code, message, retryable, retry_after)
    ), target AS (
        SELECT req.*,
               c.attempts,
               CASE WHEN c.cancel_requested_at IS NOT NULL THEN 'CANCELLED'
                    WHEN req.retryable AND c.attempts < c.max_attempts THEN 'RETRY'
                    ELSE 'FAILED' END AS next_status
        FROM req
        JOIN ingestion_jobs c ON c.id = req.id AND c.lease = req.lease AND c.status = 'RUNNING'
        FOR UPDATE OF c
    ), upd AS (
        UPDATE ingestion_jobs j
        SET status                  = t.next_status,
            run_after               = CASE WHEN t.next_status = 'RETRY' THEN
                                          v_now + make_interval(secs => coalesce(
                                              t.retry_after,
                                              least(p_backoff_max,
                                                    p_backoff_base * 2 ^ greatest(t.attempts - 1, 0))
                                                * (0.5 + random() / 2)))
                                      ELSE j.run_after END,
            completed_at            = CASE WHEN t.next_status = 'RETRY' THEN NULL ELSE v_now END,
            processing_completed_at = v_now,
            last_error              = t.message,
            error_code              = CASE WHEN t.next_status = 'CANCELLED' THEN 'CANCELLED'
                                          ELSE t.code END,
            errors                  = j.errors || jsonb_build_array(jsonb_build_object(
                                          'attempt', t.attempts, 'time', v_now,
                                          'code', t.code, 'message', t.message)),
            stage                   = CASE WHEN t.next_status = 'CANCELLED' THEN 'cancelled'
                                          ELSE 'failed' END,
            cancel_requested_at     = NULL,
            updated_at              = v_now
        FROM target t
        WHERE j.id = t.id AND j.lease = t.lease AND j.status = 'RUNNING'
        RETURNING j.id, j.lease, j.status, j AS job
    )
    -- The updated row for an OK entry; the current one (a separate snapshot of the same
    -- statement, so before any change) otherwise, or NULL when there is none.
    SELECT r.id,
           CASE WHEN u.id IS NOT NULL THEN 'ok'
                WHEN cur.id IS NULL THEN 'not_found'
                ELSE 'lease_lost' END,
           coalesce(u.status, cur.status),
           CASE WHEN u.id IS NOT NULL THEN u.job WHEN cur.id IS NOT NULL THEN cur END
    FROM unnest(p_job_ids, p_leases) WITH ORDINALITY AS r(id, lease, ord)
    LEFT JOIN upd u ON u.id = r.id AND u.lease = r.lease
    LEFT JOIN ingestion_jobs cur ON cur.id = r.id
    ORDER BY r.ord;
END
$$;

CREATE OR REPLACE FUNCTION fail_job(
    p_job_id       uuid,
    p_lease        bigint,
    p_error_code   text,
    p_message      text,
    p_retryable    boolean          DEFAULT true,
    p_retry_after  double precision DEFAULT NULL,
    p_backoff_base double precision DEFAULT 10,
    p_backoff_max  double precision DEFAULT 3600
)
RETURNS TABLE (outcome text, job ingestion_jobs)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT f.outcome, f.job
    FROM fail_job(ARRAY[p_job_id], ARRAY[p_lease], ARRAY[p_error_code], ARRAY[p_message],
                  ARRAY[p_retryable], ARRAY[p_retry_after], p_backoff_base, p_backoff_max) f;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Release: a worker hands back a RUNNING job it will not finish (it is shutting down, or could
-- not take what it claimed). Not a failure: the attempt is not counted and the job is QUEUED
-- again at once for any worker; CANCELLED instead if its cancellation was requested. The lease
-- is left as it was, so it stays dead: the next claim takes a new one. Outcomes as complete_job.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION release_job(
    p_job_ids uuid[],
    p_leases  bigint[],
    p_reasons text[]
)
RETURNS TABLE (job_id uuid, outcome text, status text, job ingestion_jobs)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH req AS (
        SELECT DISTINCT ON (r.id, r.lease) r.id, r.lease, r.reason
        FROM unnest(p_job_ids, p_leases, p_reasons) AS r(id, lease, reason)
    ), upd AS (
        UPDATE ingestion_jobs j
        SET status                  = CASE WHEN j.cancel_requested_at IS NOT NULL
                                          THEN 'CANCELLED' ELSE 'QUEUED' END,
            attempts                = CASE WHEN j.cancel_requested_at IS NOT NULL THEN j.attempts
                                          ELSE greatest(j.attempts - 1, 0) END,
            run_after               = v_now,
            completed_at            = CASE WHEN j.cancel_requested_at IS NOT NULL
                                          THEN v_now END,
            processing_completed_at = v_now,
            stage                   = CASE WHEN j.cancel_requested_at IS NOT NULL
                                          THEN 'cancelled' ELSE 'released' END,
            error_code              = CASE WHEN j.cancel_requested_at IS NOT NULL
                                          THEN 'CANCELLED' ELSE j.error_code END,
            progress                = 0,
            cancel_requested_at     = NULL,
            updated_at              = v_now
        FROM req
        WHERE j.id = req.id AND j.lease = req.lease AND j.status = 'RUNNING'
        RETURNING j.id, j.lease, j.status, j.queue, j AS job
    ), woken AS (
        SELECT pg_notify('ingestion_jobs', q.queue)
        FROM (SELECT DISTINCT queue FROM upd WHERE upd.status = 'QUEUED') q
    )
    SELECT r.id,
           CASE WHEN u.id IS NOT NULL THEN 'ok'
                WHEN cur.id IS NULL THEN 'not_found'
                ELSE 'lease_lost' END,
           coalesce(u.status, cur.status),
           CASE WHEN u.id IS NOT NULL THEN u.job WHEN cur.id IS NOT NULL THEN cur END
    FROM unnest(p_job_ids, p_leases) WITH ORDINALITY AS r(id, lease, ord)
    LEFT JOIN upd u ON u.id = r.id AND u.lease = r.lease
    LEFT JOIN ingestion_jobs cur ON cur.id = r.id
    LEFT JOIN (SELECT count(*) FROM woken) w ON true
    ORDER BY r.ord;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Cancel: QUEUED or RETRY -> CANCELLED at once ('cancelled'). RUNNING -> cancellation requested
-- ('cancel_requested'): the job stays RUNNING until its worker, told by its next heartbeat
-- answer, stops and fails it (-> CANCELLED), or until the stale sweep finds the worker gone.
-- Anything else: 'wrong_state'; unknown id: 'not_found'. Nothing changes unless 'cancelled' or
-- 'cancel_requested'.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION cancel_job(p_job_id uuid)
RETURNS TABLE (outcome text, job ingestion_jobs)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
    v_job ingestion_jobs;
BEGIN
    UPDATE ingestion_jobs j
    SET status              = CASE WHEN j.status = 'RUNNING' THEN 'RUNNING' ELSE 'CANCELLED' END,
        cancel_requested_at = CASE WHEN j.status = 'RUNNING'
                                   THEN coalesce(j.cancel_requested_at, v_now) END,
        completed_at        = CASE WHEN j.status = 'RUNNING' THEN NULL ELSE v_now END,
        stage               = CASE WHEN j.status = 'RUNNING' THEN j.stage ELSE 'cancelled' END,
        error_code          = CASE WHEN j.status = 'RUNNING' THEN j.error_code ELSE 'CANCELLED' END,
        updated_at          = v_now
    WHERE j.id = p_job_id AND j.status IN ('QUEUED', 'RETRY', 'RUNNING')
    RETURNING j.* INTO v_job;

    IF FOUND THEN
        RETURN QUERY SELECT CASE WHEN v_job.status = 'RUNNING' THEN 'cancel_requested'
                                 ELSE 'cancelled' END, v_job;
        RETURN;
    END IF;
    SELECT j.* INTO v_job FROM ingestion_jobs j WHERE j.id = p_job_id;
    RETURN QUERY SELECT CASE WHEN FOUND THEN 'wrong_state' ELSE 'not_found' END, v_job;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Retry (operator): FAILED or CANCELLED -> QUEUED with a fresh set of attempts. The errors
-- history is kept; last_error and error_code are cleared with the attempt count they explain.
-- Outcomes as cancel_job: 'retried', 'wrong_state', 'not_found'.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION retry_job(p_job_id uuid)
RETURNS TABLE (outcome text, job ingestion_jobs)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
    v_job ingestion_jobs;
BEGIN
    UPDATE ingestion_jobs j
    SET status                  = 'QUEUED',
        attempts                = 0,
        run_after               = v_now,
        completed_at            = NULL,
        processing_completed_at = NULL,
        cancel_requested_at     = NULL,
        last_error              = NULL,
        error_code              = NULL,
        stage                   = NULL,
        progress                = 0,
        updated_at              = v_now
    WHERE j.id = p_job_id AND j.status IN ('FAILED', 'CANCELLED')
    RETURNING j.* INTO v_job;

    IF FOUND THEN
        PERFORM pg_notify('ingestion_jobs', v_job.queue);
        RETURN QUERY SELECT 'retried', v_job;
        RETURN;
    END IF;
    SELECT j.* INTO v_job FROM ingestion_jobs j WHERE j.id = p_job_id;
    RETURN QUERY SELECT CASE WHEN FOUND THEN 'wrong_state' ELSE 'not_found' END, v_job;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Stale release: RUNNING jobs whose worker stopped heartbeating for p_heartbeat_timeout_seconds
-- (HEARTBEAT_TIMEOUT; a job with no heartbeat yet counts from its claim) or that have held the
-- lock for p_lock_timeout_seconds even while heartbeating (LOCK_TIMEOUT: the run-time cap).
-- They go to RETRY, runnable at once, with "worker timed out" in last_error; a job on its last
-- attempt goes to FAILED instead of vanishing, and one whose cancellation was requested to
-- CANCELLED. The old lease stays dead: the next claim takes a new one, so the missing worker
-- cannot finish the job if it comes back. SKIP LOCKED: a job being completed right now is not
-- released from under its worker.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION release_stale_jobs(
    p_heartbeat_timeout_seconds double precision DEFAULT 120,
    p_lock_timeout_seconds      double precision DEFAULT 1800
)
RETURNS TABLE (job_id uuid, reason text, status text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH stale AS (
        SELECT s.id,
               CASE WHEN coalesce(s.last_heartbeat_at, s.locked_at)
                         < v_now - make_interval(secs => p_heartbeat_timeout_seconds)
                    THEN 'HEARTBEAT_TIMEOUT' ELSE 'LOCK_TIMEOUT' END AS reason,
               CASE WHEN s.cancel_requested_at IS NOT NULL THEN 'CANCELLED'
                    WHEN s.attempts >= s.max_attempts THEN 'FAILED'
                    ELSE 'RETRY' END AS next_status,
               extract(epoch FROM v_now - coalesce(s.last_heartbeat_at, s.locked_at))::int
                   AS silent_seconds,
               extract(epoch FROM v_now - s.locked_at)::int AS locked_seconds
        FROM ingestion_jobs s
        WHERE s.status = 'RUNNING'
          AND (coalesce(s.last_heartbeat_at, s.locked_at)
                   < v_now - make_interval(secs => p_heartbeat_timeout_seconds)
               OR s.locked_at < v_now - make_interval(secs => p_lock_timeout_seconds))
        FOR UPDATE SKIP LOCKED
    ), msg AS (
        SELECT stale.*,
               CASE WHEN reason = 'HEARTBEAT_TIMEOUT'
                    THEN format('worker timed out: no heartbeat for %s s', silent_seconds)
                    ELSE format('worker timed out: lock held for %s s', locked_seconds) END
                   AS message
        FROM stale
    ), upd AS (
        UPDATE ingestion_jobs j
        SET status                  = m.next_status,
            run_after               = CASE WHEN m.next_status = 'RETRY' THEN v_now ELSE j.run_after END,
            completed_at            = CASE WHEN m.next_status = 'RETRY' THEN NULL ELSE v_now END,
            processing_completed_at = v_now,
            last_error              = m.message || coalesce(' (locked by ' || j.locked_by || ')', ''),
            error_code              = CASE WHEN m.next_status = 'CANCELLED' THEN 'CANCELLED'
                                          ELSE m.reason END,
            errors                  = j.errors || jsonb_build_array(jsonb_build_object(
                                          'attempt', j.attempts, 'time', v_now,
                                          'code', m.reason, 'message', m.message)),
            stage                   = CASE WHEN m.next_status = 'CANCELLED' THEN 'cancelled'
                                          ELSE 'released_stale' END,
            cancel_requested_at     = NULL,
            updated_at              = v_now
        FROM msg m
        WHERE j.id = m.id
        RETURNING j.id, m.reason, j.status, j.queue
    ), woken AS (
        SELECT pg_notify('ingestion_jobs', q.queue)
        FROM (SELECT DISTINCT queue FROM upd WHERE upd.status = 'RETRY') q
    )
    SELECT upd.id, upd.reason, upd.status
    FROM upd LEFT JOIN (SELECT count(*) FROM woken) w ON true;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Monitoring views: what an operator reads in psql (the checklist's "Production Monitoring").
-- Dropped and re-created so that a later column change re-applies cleanly.
-- ---------------------------------------------------------------------------------------------

DROP VIEW IF EXISTS dead_letter_jobs;
CREATE VIEW dead_letter_jobs AS
SELECT id, queue, attempts, max_attempts, error_code, last_error, errors, input, locked_by,
       stage, created_at, completed_at AS failed_at
FROM ingestion_jobs
WHERE status = 'FAILED'
ORDER BY completed_at DESC;

DROP VIEW IF EXISTS job_queue_stats;
CREATE VIEW job_queue_stats AS
SELECT queue, status, count(*) AS count,
       min(created_at) AS oldest_created_at,
       max(created_at) AS newest_created_at,
       round(avg(attempts), 2) AS avg_attempts
FROM ingestion_jobs
GROUP BY queue, status
ORDER BY queue, status;

DROP VIEW IF EXISTS running_jobs_monitor;
CREATE VIEW running_jobs_monitor AS
SELECT id, stage, round(progress::numeric, 2) AS progress,
       extract(epoch FROM now() - coalesce(processing_started_at, locked_at))::int
           AS running_seconds,
       extract(epoch FROM now() - coalesce(last_heartbeat_at, locked_at))::int
           AS heartbeat_age_seconds,
       queue, locked_by, attempts, max_attempts, locked_at, last_heartbeat_at,
       cancel_requested_at IS NOT NULL AS cancel_requested, input
FROM ingestion_jobs
WHERE status = 'RUNNING'
ORDER BY locked_at;

DROP VIEW IF EXISTS job_timing_stats;
CREATE VIEW job_timing_stats AS
WITH timed AS (
    SELECT status,
           extract(epoch FROM processing_completed_at - processing_started_at) AS seconds
    FROM ingestion_jobs
    WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
      AND processing_started_at IS NOT NULL
      AND processing_completed_at IS NOT NULL
)
SELECT status, count(*) AS count,
       round(avg(seconds), 1) AS avg_duration_seconds,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds))::numeric, 1) AS p50_seconds,
       round((percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds))::numeric, 1) AS p95_seconds
FROM timed
GROUP BY status
ORDER BY status;

DROP VIEW IF EXISTS stage_distribution;
CREATE VIEW stage_distribution AS
SELECT status, stage, count(*) AS count,
       round(avg(progress)::numeric, 2) AS avg_progress,
       max(extract(epoch FROM now() - last_heartbeat_at))
           FILTER (WHERE status = 'RUNNING')::int AS max_heartbeat_age_seconds
FROM ingestion_jobs
GROUP BY status, stage
ORDER BY status, count(*) DESC;

COMMIT;
