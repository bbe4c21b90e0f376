-- job_queue/claim.sql, included by 004: Claim (QUEUED | RETRY -> RUNNING).

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
