-- job_queue/complete.sql, included by 004: Complete (RUNNING -> SUCCEEDED).

-- ---------------------------------------------------------------------------------------------
-- Complete: RUNNING with the current lease -> SUCCEEDED. Outcome per job (settle_outcomes):
-- 'ok', 'lease_lost' (exists, but not RUNNING under this lease: nothing changed) or
-- 'not_found', or 'locked' (another transaction holds its row: skipped, never waited for, so one
-- locked row cannot hold the other entries of a batch). A repeated Complete under the lease
-- that already completed the job is 'ok'.
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
        WITH done AS (
            SELECT DISTINCT ON (d.id, d.lease) d.id, d.lease, d.output
            FROM unnest(p_job_ids, p_leases, p_outputs) AS d(id, lease, output)
        ), mine AS (
            -- The rows that no other transaction holds (the lock the UPDATE itself takes).
            SELECT done.*
            FROM done
            JOIN ingestion_jobs c
              ON c.id = done.id AND c.lease = done.lease AND c.status = 'RUNNING'
            FOR NO KEY UPDATE OF c SKIP LOCKED
        ), upd AS (
            UPDATE ingestion_jobs j
            SET status                  = 'SUCCEEDED',
                output                  = coalesce(mine.output, '{}'::jsonb),
                stage                   = 'succeeded',
                progress                = 1,
                completed_at            = v_now,
                processing_completed_at = v_now,
                cancel_requested_at     = NULL,
                updated_at              = v_now
            FROM mine
            -- By id alone, not status (settle.sql: "A settle's UPDATE").
            WHERE j.id = mine.id AND j.lease = mine.lease
            RETURNING j AS job
        )
        SELECT array_agg(upd.job) INTO v_pass FROM upd;
        v_settled := v_settled || v_pass;
        EXIT WHEN v_waited
            OR coalesce(cardinality(v_settled), 0) >= cardinality(p_job_ids)
            OR NOT settle_wait_for_locks(p_job_ids, p_leases);
        v_waited := true;
    END LOOP;

    RETURN QUERY SELECT * FROM settle_outcomes(p_job_ids, p_leases, v_settled, v_now, 'SUCCEEDED');
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
