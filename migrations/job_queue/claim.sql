-- job_queue/claim.sql, included by 004: Claim (QUEUED | RETRY -> RUNNING).

-- ---------------------------------------------------------------------------------------------
-- Claim: one statement. The CTE picks runnable jobs with FOR UPDATE SKIP LOCKED (concurrent
-- claimers skip each other's rows instead of waiting) and LIMIT inside the CTE, so exactly the
-- picked rows are updated: never more than p_limit. Each claim increments attempts and takes a
-- new lease.
--
-- A claim first asks whether anything in the queue is due at all: the first entry of the queue in
-- 006's ingestion_jobs_due_idx answers in one index descent (an InitPlan, so when it says no,
-- the scan does not start). The claim index orders by priority first, so without it a claim
-- that finds nothing would walk every job waiting in backoff or scheduled for later.
--
-- The plan must stay an index scan at any depth, whatever the statistics say: plpgsql keeps the
-- generic plan it makes after five calls until the table is next analyzed, and a plan made while
-- the table was small (a sequential scan and a sort, or a hash join over a scan) stays in use as
-- the table grows, so that every call costs more (docs/state-machine.md, "Plans"). Here the
-- shape of the statement leaves one plan without a sequential scan or a sort: the due index in
-- run_after order answers the InitPlan, the claim index in exactly the claim's order feeds the
-- LIMIT, and the UPDATE reaches the picked rows by their ctid (a TID scan; the ctids are one
-- array, made once, so exactly the picked rows are updated). Turning sequential
-- scans and sorts off for this function makes the planner take it at any size, so the generic
-- plan is safe, and the function asks for it: left to choose, plpgsql compared the generic plan's
-- cost (made without knowing the limit or the clock) with the custom plans' and planned every
-- call afresh, about a quarter of a claim of 10 jobs. So no call pays for planning (the other
-- hot functions are planned per call).
--
-- A run_after before 0001-01-01 (an operator's '-infinity', which makes the job due first) is
-- claimed like any other, and becomes 0001-01-01: no client can read a time before it (migration
-- 013), and a settle answers with the job's run_after, so the worker could never complete it.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION claim_jobs(
    p_worker_id text,
    p_limit     integer DEFAULT 1,
    p_queue     text    DEFAULT 'default'
)
RETURNS SETOF ingestion_jobs
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_sort = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT c.ctid
        FROM ingestion_jobs c
        WHERE c.queue = p_queue
          AND c.status IN ('QUEUED', 'RETRY')
          AND c.run_after <= v_now
          AND (SELECT d.run_after
               FROM ingestion_jobs d
               WHERE d.queue = p_queue AND d.status IN ('QUEUED', 'RETRY')
               ORDER BY d.run_after
               LIMIT 1) <= v_now
        ORDER BY c.priority DESC, c.run_after, c.id
        LIMIT greatest(p_limit, 0)
        FOR UPDATE SKIP LOCKED
    )
    UPDATE ingestion_jobs j
    SET status                  = 'RUNNING',
        run_after               = CASE WHEN j.run_after < timestamptz '0001-01-01 00:00:00+00'
                                       THEN timestamptz '0001-01-01 00:00:00+00'
                                       ELSE j.run_after END,
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
    WHERE j.ctid = ANY (ARRAY(SELECT picked.ctid FROM picked))
    RETURNING j.*;
END
$$;
