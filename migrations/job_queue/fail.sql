-- job_queue/fail.sql, included by 004: Fail (RUNNING -> RETRY | FAILED | CANCELLED).

-- ---------------------------------------------------------------------------------------------
-- Fail: records a failed attempt of a RUNNING job with the current lease.
--   cancellation requested           -> CANCELLED
--   retryable and attempts remain    -> RETRY, run_after = now + backoff (or p_retry_after)
--   otherwise                        -> FAILED (the dead letter)
-- Backoff is exponential with equal jitter: d = min(cap, base * 2^(attempts-1)), and the delay is
-- uniform in [d/2, d], so retries of jobs that failed together spread out and run_after is
-- always in the future. Every failure appends {attempt, time, code, message, number} to errors,
-- which keeps the last 20.
-- Outcomes as complete_job (settle_outcomes; a locked row is skipped: 'locked'); a RETRY due at
-- once (p_retry_after <= 0) wakes waiting claimers.
-- ---------------------------------------------------------------------------------------------

-- One entry of a job's errors history, {attempt, time, code, message}, as a one-element array to
-- append. (fail_job and release_stale_jobs append through ingestion_job_errors_append.)
CREATE OR REPLACE FUNCTION ingestion_job_error(
    p_attempt integer,
    p_time    timestamptz,
    p_code    text,
    p_message text
)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_array(jsonb_build_object(
        'attempt', p_attempt, 'time', p_time, 'code', p_code, 'message', p_message))
$$;

-- A job's errors history with one more failed attempt: what fail_job and release_stale_jobs
-- record. The entry is {attempt, time, code, message, number}: `number` counts the job's
-- failures over its whole life, operator retries included (an entry written before it existed
-- counts as its position), and the history keeps only the last 20 entries, so a job retried
-- for ever neither grows its row nor every GetJob that reads it. The last entry's number is
-- the job's total (Job.errors_total).
CREATE OR REPLACE FUNCTION ingestion_job_errors_append(
    p_errors  jsonb,
    p_attempt integer,
    p_time    timestamptz,
    p_code    text,
    p_message text
)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    -- One expression, no FROM: the planner inlines it into the UPDATE that calls it, where a
    -- body with a query of its own ran as a separate statement for every row (tens of
    -- microseconds each). The 19 latest entries are kept once there are 20, so with the new one
    -- the history holds the last 20.
    SELECT CASE WHEN jsonb_array_length(p_errors) < 20 THEN p_errors
                ELSE jsonb_path_query_array(p_errors, '$[last - 18 to last]') END
           || jsonb_build_array(jsonb_build_object(
                  'attempt', p_attempt, 'time', p_time, 'code', p_code, 'message', p_message,
                  'number', CASE WHEN jsonb_typeof(p_errors -> -1 -> 'number') = 'number'
                                 THEN (p_errors -> -1 ->> 'number')::numeric::bigint
                                 ELSE jsonb_array_length(p_errors) END + 1))
$$;

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
-- Planned at every call, for the table as it is now (docs/state-machine.md, "Plans").
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_settled ingestion_jobs[];
    v_pass    ingestion_jobs[];
    v_waited  boolean := false;
BEGIN
    -- Twice at most: the second pass settles the rows the first skipped, once a short wait for
    -- their locks succeeded (settle_wait_for_locks, settle.sql).
    LOOP
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
            JOIN ingestion_jobs c
              ON c.id = req.id AND c.lease = req.lease AND c.status = 'RUNNING'
            FOR NO KEY UPDATE OF c SKIP LOCKED
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
                errors                  = ingestion_job_errors_append(j.errors, t.attempts, v_now,
                                                                          t.code, t.message),
                stage                   = CASE WHEN t.next_status = 'CANCELLED' THEN 'cancelled'
                                              ELSE 'failed' END,
                cancel_requested_at     = NULL,
                updated_at              = v_now
            FROM target t
            -- By id alone, not status (settle.sql: "A settle's UPDATE").
            WHERE j.id = t.id AND j.lease = t.lease
            RETURNING j AS job
        )
        SELECT array_agg(upd.job) INTO v_pass FROM upd;
        v_settled := v_settled || v_pass;
        EXIT WHEN v_waited
            OR coalesce(cardinality(v_settled), 0) >= cardinality(p_job_ids)
            OR NOT settle_wait_for_locks(p_job_ids, p_leases);
        v_waited := true;
    END LOOP;

    RETURN QUERY SELECT * FROM settle_outcomes(p_job_ids, p_leases, v_settled, v_now);
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
