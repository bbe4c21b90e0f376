-- job_queue/retry.sql, included by 004: Retry by an operator (FAILED | CANCELLED -> QUEUED).

-- ---------------------------------------------------------------------------------------------
-- Retry (operator): FAILED or CANCELLED -> QUEUED with a fresh set of attempts. The errors
-- history is kept; last_error and error_code are cleared with the attempt count they explain.
-- Outcomes as cancel_job: 'retried', 'wrong_state', 'not_found'. A retried job wakes waiting
-- claimers (notify_queue).
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION retry_job(p_job_id uuid)
RETURNS TABLE (outcome text, job ingestion_jobs)
LANGUAGE plpgsql
-- Planned at every call, for the table as it is now (docs/state-machine.md, "Plans").
SET plan_cache_mode = force_custom_plan
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
        PERFORM notify_queue(ARRAY[v_job.queue], ARRAY[v_job.run_after], v_now);
        RETURN QUERY SELECT 'retried', v_job;
        RETURN;
    END IF;
    SELECT j.* INTO v_job FROM ingestion_jobs j WHERE j.id = p_job_id;
    RETURN QUERY SELECT CASE WHEN FOUND THEN 'wrong_state' ELSE 'not_found' END, v_job;
END
$$;
