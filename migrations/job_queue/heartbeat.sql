-- job_queue/heartbeat.sql, included by 004: Heartbeat (RUNNING -> RUNNING; answers continue,
-- cancel or lease_lost).

-- ---------------------------------------------------------------------------------------------
-- Heartbeat: records liveness, stage and progress of RUNNING jobs whose lease is current.
-- Answers per job: 'continue', 'cancel' (an operator asked to cancel it) or 'lease_lost' (the
-- job was released, re-claimed, finished or deleted: the worker must stop and not complete it).
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION update_job_heartbeat(
    p_job_ids  uuid[],
    p_leases   bigint[],
    p_stages   text[],
    p_progress double precision[]
)
RETURNS TABLE (job_id uuid, action text)
LANGUAGE plpgsql
-- Planned at every call, for the table as it is now (docs/state-machine.md, "Plans").
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    v_now    timestamptz := clock_timestamp();
    v_ids    uuid[];
    v_leases bigint[];
    v_cancel boolean[];
BEGIN
    WITH beat AS (
        -- The latest beat of each claim wins when one batch carries several.
        SELECT DISTINCT ON (b.id, b.lease) b.id, b.lease, b.stage, b.progress
        FROM unnest(p_job_ids, p_leases, p_stages, p_progress) WITH ORDINALITY
             AS b(id, lease, stage, progress, ord)
        ORDER BY b.id, b.lease, b.ord DESC
    ), upd AS (
        UPDATE ingestion_jobs j
        SET last_heartbeat_at = v_now,
            stage             = coalesce(nullif(beat.stage, ''), j.stage),
            progress          = least(1, greatest(0, coalesce(beat.progress, j.progress))),
            updated_at        = v_now
        FROM beat
        WHERE j.id = beat.id AND j.lease = beat.lease AND j.status = 'RUNNING'
        RETURNING j.id, j.lease, j.cancel_requested_at IS NOT NULL AS cancel
    )
    SELECT array_agg(upd.id), array_agg(upd.lease), array_agg(upd.cancel)
    INTO v_ids, v_leases, v_cancel
    FROM upd;

    -- Joined as arrays, whose size the plan knows, not as the UPDATE's result, which it takes
    -- for one row: a nested loop over it costs a batch of 1,000 beats a million comparisons.
    RETURN QUERY
    SELECT r.id,
           CASE WHEN u.id IS NULL THEN 'lease_lost'
                WHEN u.cancel THEN 'cancel'
                ELSE 'continue' END
    FROM unnest(p_job_ids, p_leases) WITH ORDINALITY AS r(id, lease, ord)
    LEFT JOIN unnest(v_ids, v_leases, v_cancel) AS u(id, lease, cancel)
           ON u.id = r.id AND u.lease = r.lease
    ORDER BY r.ord;
END
$$;

CREATE OR REPLACE FUNCTION update_job_heartbeat(
    p_job_id   uuid,
    p_lease    bigint,
    p_stage    text             DEFAULT NULL,
    p_progress double precision DEFAULT NULL
)
RETURNS text
LANGUAGE sql
AS $$
    SELECT h.action
    FROM update_job_heartbeat(ARRAY[p_job_id], ARRAY[p_lease], ARRAY[p_stage], ARRAY[p_progress]) h
$$;
