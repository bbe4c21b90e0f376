-- job_queue/release.sql, included by 004: Release by its worker (RUNNING -> QUEUED | CANCELLED).

-- ---------------------------------------------------------------------------------------------
-- Release: a worker hands back a RUNNING job it will not finish (it is shutting down, or could
-- not take what it claimed). Not a failure: the attempt is not counted and the job is QUEUED
-- again at once for any worker, which wakes waiting claimers; CANCELLED instead if its
-- cancellation was requested. The lease is left as it was, so it stays dead: the next claim
-- takes a new one. Outcomes as complete_job (settle_outcomes; a locked row is skipped:
-- 'locked').
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION release_job(
    p_job_ids uuid[],
    p_leases  bigint[],
    p_reasons text[]
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
            SELECT DISTINCT ON (r.id, r.lease) r.id, r.lease, r.reason
            FROM unnest(p_job_ids, p_leases, p_reasons) AS r(id, lease, reason)
        ), mine AS (
            -- The rows that no other transaction holds (the lock the UPDATE itself takes).
            SELECT req.*
            FROM req
            JOIN ingestion_jobs c
              ON c.id = req.id AND c.lease = req.lease AND c.status = 'RUNNING'
            FOR NO KEY UPDATE OF c SKIP LOCKED
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

    RETURN QUERY SELECT * FROM settle_outcomes(p_job_ids, p_leases, v_settled, v_now);
END
$$;
