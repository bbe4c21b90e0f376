-- job_queue/release_stale.sql, included by 004: the stale sweep (RUNNING -> RETRY | FAILED |
-- CANCELLED), and the rule that says which jobs are stale.

-- ---------------------------------------------------------------------------------------------
-- The stale rule, stated once: why a RUNNING job counts as abandoned at p_now, or NULL when it
-- does not. 'HEARTBEAT_TIMEOUT': no heartbeat for p_heartbeat_timeout_seconds (a job with no
-- heartbeat yet counts from its claim); 'LOCK_TIMEOUT': locked for p_lock_timeout_seconds even
-- while heartbeating (the run-time cap; NULL: no cap). release_stale_jobs releases by it, and
-- the queue service's stats count by it (stale_running in queue_service/sql/queries.sql).
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION ingestion_job_stale_reason(
    p_last_heartbeat_at         timestamptz,
    p_locked_at                 timestamptz,
    p_now                       timestamptz,
    p_heartbeat_timeout_seconds double precision,
    p_lock_timeout_seconds      double precision
)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN coalesce(p_last_heartbeat_at, p_locked_at)
                     < p_now - make_interval(secs => p_heartbeat_timeout_seconds)
                THEN 'HEARTBEAT_TIMEOUT'
                WHEN p_locked_at < p_now - make_interval(secs => p_lock_timeout_seconds)
                THEN 'LOCK_TIMEOUT' END
$$;

-- ---------------------------------------------------------------------------------------------
-- Stale release: RUNNING jobs that ingestion_job_stale_reason calls stale, for
-- HEARTBEAT_TIMEOUT or LOCK_TIMEOUT. They go to RETRY, runnable at once (which wakes waiting
-- claimers), with "worker timed out" in last_error; a job on its last attempt goes to FAILED
-- instead of vanishing, and one whose cancellation was requested to CANCELLED. The old lease
-- stays dead: the next claim takes a new one, so the missing worker cannot finish the job if it
-- comes back. SKIP LOCKED: a job being completed right now is not released from under its
-- worker.
-- A beat that found the job's row locked counts as its latest heartbeat
-- (ingestion_job_deferred_beats, migration 009; job_queue/heartbeat.sql says why); rows of it
-- older than the timeout matter no more and are deleted here. The table is read by EXECUTE, so
-- that 003 and 004 applied alone, without 009, still sweep.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION release_stale_jobs(
    p_heartbeat_timeout_seconds double precision DEFAULT 120,
    p_lock_timeout_seconds      double precision DEFAULT 1800
)
RETURNS TABLE (job_id uuid, reason text, status text)
LANGUAGE plpgsql
-- Planned at every call, for the table as it is now (docs/state-machine.md, "Plans").
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_ids      uuid[];
    v_reasons  text[];
    v_statuses text[];
    v_runnable text[];
    v_due      timestamptz[];
    v_def_ids    uuid[];
    v_def_leases bigint[];
    v_def_at     timestamptz[];
BEGIN
    IF to_regclass('ingestion_job_deferred_beats') IS NOT NULL THEN
        EXECUTE 'DELETE FROM ingestion_job_deferred_beats WHERE beat_at < $1'
            USING v_now - make_interval(secs => p_heartbeat_timeout_seconds);
        EXECUTE 'SELECT array_agg(job_id), array_agg(lease), array_agg(beat_at)
                 FROM ingestion_job_deferred_beats'
            INTO v_def_ids, v_def_leases, v_def_at;
    END IF;

    -- The deferred beats are joined, one row per claim (a hash join: each side read once), never
    -- looked up per RUNNING job: a subquery per job scanned every deferred beat for each of them,
    -- seconds per sweep at 10,000 running jobs and 5,000 beats.
    WITH deferred AS (
        SELECT d.id, d.lease, max(d.beat_at) AS beat_at
        FROM unnest(v_def_ids, v_def_leases, v_def_at) AS d(id, lease, beat_at)
        GROUP BY d.id, d.lease
    ), stale AS (
        SELECT s.id, st.reason,
               CASE WHEN s.cancel_requested_at IS NOT NULL THEN 'CANCELLED'
                    WHEN s.attempts >= s.max_attempts THEN 'FAILED'
                    ELSE 'RETRY' END AS next_status,
               -- Clamped to finite times: an operator's 'infinity' or '-infinity' in either
               -- column would make the subtraction fail the whole sweep.
               extract(epoch FROM v_now - least(greatest(coalesce(beat.at, s.locked_at),
                                                         timestamptz '0001-01-01 00:00:00+00'),
                                                timestamptz '9999-12-31 23:59:59+00'))::bigint
                   AS silent_seconds,
               extract(epoch FROM v_now - least(greatest(s.locked_at,
                                                         timestamptz '0001-01-01 00:00:00+00'),
                                                timestamptz '9999-12-31 23:59:59+00'))::bigint
                   AS locked_seconds
        FROM ingestion_jobs s
        LEFT JOIN deferred d ON d.id = s.id AND d.lease = s.lease
        CROSS JOIN LATERAL (
            SELECT greatest(s.last_heartbeat_at, d.beat_at) AS at
        ) beat
        CROSS JOIN LATERAL (
            SELECT ingestion_job_stale_reason(beat.at, s.locked_at, v_now,
                                              p_heartbeat_timeout_seconds,
                                              p_lock_timeout_seconds) AS reason
        ) st
        WHERE s.status = 'RUNNING' AND st.reason IS NOT NULL
        FOR UPDATE OF s SKIP LOCKED
    ), msg AS (
        SELECT stale.*,
               CASE WHEN reason = 'HEARTBEAT_TIMEOUT'
                    THEN format('worker timed out: no heartbeat for %s s', silent_seconds)
                    ELSE format('worker timed out: lock held for %s s', locked_seconds) END
                   AS message
        FROM stale
    ), upd AS (
        UPDATE ingestion_jobs j
        SET status                  = m.next_status,
            run_after               = CASE WHEN m.next_status = 'RETRY' THEN v_now ELSE j.run_after END,
            completed_at            = CASE WHEN m.next_status = 'RETRY' THEN NULL ELSE v_now END,
            processing_completed_at = v_now,
            last_error              = m.message || coalesce(' (locked by ' || j.locked_by || ')', ''),
            error_code              = CASE WHEN m.next_status = 'CANCELLED' THEN 'CANCELLED'
                                          ELSE m.reason END,
            errors                  = ingestion_job_errors_append(j.errors, j.attempts, v_now,
                                                                      m.reason, m.message),
            stage                   = CASE WHEN m.next_status = 'CANCELLED' THEN 'cancelled'
                                          ELSE 'released_stale' END,
            cancel_requested_at     = NULL,
            updated_at              = v_now
        FROM msg m
        WHERE j.id = m.id
        RETURNING j.id, m.reason, j.status, j.queue, j.run_after
    )
    SELECT array_agg(upd.id), array_agg(upd.reason), array_agg(upd.status),
           array_agg(upd.queue) FILTER (WHERE upd.status = 'RETRY'),
           array_agg(upd.run_after) FILTER (WHERE upd.status = 'RETRY')
    INTO v_ids, v_reasons, v_statuses, v_runnable, v_due
    FROM upd;

    PERFORM notify_queue(v_runnable, v_due, v_now);

    RETURN QUERY SELECT * FROM unnest(v_ids, v_reasons, v_statuses);
END
$$;
