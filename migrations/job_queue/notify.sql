-- job_queue/notify.sql, included by 004: the wake-up of waiting claims, stated once.

-- ---------------------------------------------------------------------------------------------
-- notify_queue: announces jobs that are, or will become, claimable: one NOTIFY on channel
-- 'ingestion_jobs' per distinct queue named (NULLs ignored), whose payload is a JSON object
--   {"queue": "media", "runnable": 3, "due_in": 9.8}
-- runnable: how many of the jobs named may be claimed now (run_after <= p_now); due_in: seconds
-- from p_now until the earliest of the others comes due, or null when none will. A queue whose
-- jobs are all scheduled for 'infinity' is not announced: they never come due.
-- queue_service/notify.py LISTENs on it: `runnable` wakes that many waiting claims of the queue
-- (not all of them), `due_in` arms the service's timer for a job in backoff or scheduled for
-- later, so nobody polls for either. PostgreSQL delivers at commit, and never for a transaction
-- that rolls back. Every transition that leaves a job QUEUED or RETRY calls it: enqueue_jobs,
-- retry_job, fail_job and release_job (through settle_outcomes) and release_stale_jobs.
--
-- Called as a statement of its own (PERFORM), never from inside a query: a CTE that calls
-- pg_notify runs only if it is scanned, and a LEFT JOIN whose columns are unused is removed by
-- the planner, CTE and all. That is how enqueue, release and the stale sweep once sent nothing
-- and every waiting claim ran on its one-second re-poll.
-- ---------------------------------------------------------------------------------------------

-- The one-argument form sent the bare queue name (which listeners still accept).
DROP FUNCTION IF EXISTS notify_queue(text[]);

CREATE OR REPLACE FUNCTION notify_queue(
    p_queues     text[],
    p_run_afters timestamptz[],
    p_now        timestamptz
)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_payload text;
BEGIN
    FOR v_payload IN
        SELECT jsonb_build_object(
                   'queue', j.queue,
                   'runnable', count(*) FILTER (WHERE j.run_after <= p_now),
                   'due_in', extract(epoch FROM min(j.run_after) FILTER (
                                 WHERE j.run_after > p_now AND isfinite(j.run_after)) - p_now))::text
        FROM unnest(p_queues, p_run_afters) AS j(queue, run_after)
        WHERE j.queue IS NOT NULL
        GROUP BY j.queue
        HAVING bool_or(j.run_after < 'infinity')
    LOOP
        PERFORM pg_notify('ingestion_jobs', v_payload);
    END LOOP;
END
$$;
