-- job_queue/notify.sql, included by 004: the wake-up of waiting claims, stated once.

-- ---------------------------------------------------------------------------------------------
-- notify_queue: one NOTIFY on channel 'ingestion_jobs' per distinct queue named (NULLs ignored).
-- queue_service/notify.py LISTENs on it and wakes the Claim calls waiting on the queue that the
-- payload names; PostgreSQL delivers at commit, and never for a transaction that rolls back.
-- Every transition that leaves a job runnable at once calls it: enqueue_jobs, retry_job,
-- release_job (through settle_outcomes) and release_stale_jobs. A RETRY job whose backoff runs
-- out later is not announced: waiting claims find it by their own re-check.
--
-- Called as a statement of its own (PERFORM), never from inside a query: a CTE that calls
-- pg_notify runs only if it is scanned, and a LEFT JOIN whose columns are unused is removed by
-- the planner, CTE and all. That is how enqueue, release and the stale sweep once sent nothing
-- and every waiting claim ran on its one-second re-poll.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION notify_queue(p_queues text[])
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue text;
BEGIN
    FOR v_queue IN SELECT DISTINCT q FROM unnest(p_queues) AS q WHERE q IS NOT NULL LOOP
        PERFORM pg_notify('ingestion_jobs', v_queue);
    END LOOP;
END
$$;
