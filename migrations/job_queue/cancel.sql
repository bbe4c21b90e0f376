-- job_queue/cancel.sql, included by 004: Cancel (QUEUED | RETRY -> CANCELLED; RUNNING ->
-- cancellation requested).

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
-- Planned at every call, for the table as it is now (docs/state-machine.md, "Plans").
SET plan_cache_mode = force_custom_plan
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
