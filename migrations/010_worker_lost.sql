-- 010: jobs whose worker is gone, released within seconds instead of after the heartbeat
-- timeout.
--
-- A worker's heartbeat stream breaks the instant its process dies (kill -9, a crash, an OOM
-- kill): the kernel closes its socket. The queue service notes which jobs were last beaten on
-- the stream, waits a short grace (STREAM_LOST_GRACE_SECONDS, 1 s by default) in which a worker
-- that only lost its connection reconnects and beats again, possibly on another replica, and
-- then calls release_lost_jobs for them (queue_service/orphans.py). The check is against the
-- database, not the service's memory: a job that was beaten after its stream ended, on any
-- stream of any replica, has a newer last_heartbeat_at and is left alone. The heartbeat timeout
-- sweep (release_stale_jobs) stays the fallback for everything else (a frozen worker, a
-- partition that keeps connections open, a service that died with the stream).
--
-- Safe to re-apply: the function is created or replaced; nothing else changes.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/010_worker_lost.sql

BEGIN;

SET LOCAL lock_timeout = '5s';

-- ---------------------------------------------------------------------------------------------
-- Worker lost: RUNNING jobs whose worker's heartbeat stream ended (RUNNING -> RETRY | FAILED |
-- CANCELLED). Each entry names a job, the lease it was beaten under and how many seconds ago
-- its stream ended; it is released only while that lease is current (fenced like every
-- transition) and its last heartbeat (its claim, if it never beat) is older than the stream's
-- end, now minus those seconds on the database clock (the most recent end, when a job is named
-- twice). The outcome is the stale sweep's: the attempt counts
-- (a job that kills its worker must not be retried for ever), RETRY runnable at once (which
-- wakes waiting claimers), FAILED on its last attempt, CANCELLED if its cancellation was
-- requested; error_code WORKER_LOST, stage released_stale, an entry in errors. The lease is not
-- renewed, so the lost worker cannot finish the job should it come back. SKIP LOCKED: a job
-- being settled right now is left to its settle (or, failing that, to the stale sweep).
-- Returns the jobs it released.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION release_lost_jobs(
    p_job_ids        uuid[],
    p_leases         bigint[],
    p_silent_seconds double precision[]
)
RETURNS TABLE (job_id uuid, lease bigint, status text)
LANGUAGE plpgsql
-- Planned at every call, for the table as it is now (docs/state-machine.md, "Plans").
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_ids      uuid[];
    v_leases   bigint[];
    v_statuses text[];
    v_runnable text[];
    v_due      timestamptz[];
BEGIN
    WITH lost AS (
        SELECT s.id,
               CASE WHEN s.cancel_requested_at IS NOT NULL THEN 'CANCELLED'
                    WHEN s.attempts >= s.max_attempts THEN 'FAILED'
                    ELSE 'RETRY' END AS next_status,
               format('worker lost: its heartbeat stream ended %s s ago with no heartbeat since',
                      round(r.silent::numeric, 1)) AS message
        FROM ingestion_jobs s
        JOIN (SELECT e.id, e.lease, greatest(min(e.silent), 0) AS silent
              FROM unnest(p_job_ids, p_leases, p_silent_seconds) AS e(id, lease, silent)
              GROUP BY e.id, e.lease) r
          ON s.id = r.id AND s.lease = r.lease
        WHERE s.status = 'RUNNING'
          AND coalesce(s.last_heartbeat_at, s.locked_at)
              < v_now - make_interval(secs => r.silent)
        FOR UPDATE OF s SKIP LOCKED
    ), upd AS (
        UPDATE ingestion_jobs j
        SET status                  = l.next_status,
            run_after               = CASE WHEN l.next_status = 'RETRY' THEN v_now ELSE j.run_after END,
            completed_at            = CASE WHEN l.next_status = 'RETRY' THEN NULL ELSE v_now END,
            processing_completed_at = v_now,
            last_error              = l.message || coalesce(' (locked by ' || j.locked_by || ')', ''),
            error_code              = CASE WHEN l.next_status = 'CANCELLED' THEN 'CANCELLED'
                                          ELSE 'WORKER_LOST' END,
            errors                  = j.errors || ingestion_job_error(j.attempts, v_now,
                                                                      'WORKER_LOST', l.message),
            stage                   = CASE WHEN l.next_status = 'CANCELLED' THEN 'cancelled'
                                          ELSE 'released_stale' END,
            cancel_requested_at     = NULL,
            updated_at              = v_now
        FROM lost l
        WHERE j.id = l.id
        RETURNING j.id, j.lease, j.status, j.queue, j.run_after
    )
    SELECT array_agg(upd.id), array_agg(upd.lease), array_agg(upd.status),
           array_agg(upd.queue) FILTER (WHERE upd.status = 'RETRY'),
           array_agg(upd.run_after) FILTER (WHERE upd.status = 'RETRY')
    INTO v_ids, v_leases, v_statuses, v_runnable, v_due
    FROM upd;

    PERFORM notify_queue(v_runnable, v_due, v_now);

    RETURN QUERY SELECT * FROM unnest(v_ids, v_leases, v_statuses);
END
$$;

COMMIT;
