-- job_queue/heartbeat.sql, included by 004: Heartbeat (RUNNING -> RUNNING; answers continue,
-- cancel or lease_lost).

-- ---------------------------------------------------------------------------------------------
-- Heartbeat: records liveness, stage and progress of RUNNING jobs whose lease is current.
-- Answers per job: 'continue', 'cancel' (an operator asked to cancel it) or 'lease_lost' (the
-- job was released, re-claimed, finished or deleted: the worker must stop and not complete it),
-- or 'deferred' (below).
--
-- A heartbeat never waits on a row lock: rows are locked FOR NO KEY UPDATE SKIP LOCKED (the
-- lock the UPDATE itself takes), so a job whose row another transaction holds (a StoreAdvert's
-- FOR SHARE, an operator's open psql transaction) cannot stall the beats of every other job in
-- the batch, nor the batches queued behind it. Such a job's beat is answered from the row as it
-- was last committed, which a lock does not hide: 'lease_lost' when its claim has ended, else
-- 'cancel' or 'deferred' (the worker carries on, as for 'continue'), and its time is recorded in
-- ingestion_job_deferred_beats (migration 009) instead of the row, where the stale rule counts
-- it (release_stale.sql): a job whose worker beats on time is not released because its row was
-- locked when the beats came. Its stage and progress wait for the next beat that finds the row
-- free. Without migration 009 (003 and 004 applied alone) the time is not recorded.
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
    v_now        timestamptz := clock_timestamp();
    v_ids        uuid[];
    v_leases     bigint[];
    v_cancel     boolean[];
    v_skipped    uuid[];
    v_def_ids    uuid[];
    v_def_leases bigint[];
    v_def_cancel boolean[];
BEGIN
    WITH beat AS (
        -- The latest beat of each claim wins when one batch carries several.
        SELECT DISTINCT ON (b.id, b.lease) b.id, b.lease, b.stage, b.progress
        FROM unnest(p_job_ids, p_leases, p_stages, p_progress) WITH ORDINALITY
             AS b(id, lease, stage, progress, ord)
        ORDER BY b.id, b.lease, b.ord DESC
    ), mine AS (
        -- The rows that no other transaction holds.
        SELECT beat.*
        FROM beat
        JOIN ingestion_jobs j ON j.id = beat.id AND j.lease = beat.lease AND j.status = 'RUNNING'
        FOR NO KEY UPDATE OF j SKIP LOCKED
    ), upd AS (
        UPDATE ingestion_jobs j
        SET last_heartbeat_at = v_now,
            stage             = coalesce(nullif(mine.stage, ''), j.stage),
            progress          = least(1, greatest(0, coalesce(mine.progress, j.progress))),
            updated_at        = v_now
        FROM mine
        WHERE j.id = mine.id AND j.lease = mine.lease
        RETURNING j.id, j.lease, j.cancel_requested_at IS NOT NULL AS cancel
    )
    SELECT array_agg(upd.id), array_agg(upd.lease), array_agg(upd.cancel)
    INTO v_ids, v_leases, v_cancel
    FROM upd;

    -- Only a beat that was not written needs another look: the common call, where every beat
    -- was, reads nothing more.
    v_skipped := ARRAY(
        SELECT s.id
        FROM (SELECT r.id, r.lease FROM unnest(p_job_ids, p_leases) AS r(id, lease)
              EXCEPT
              SELECT u.id, u.lease FROM unnest(v_ids, v_leases) AS u(id, lease)) s);
    IF cardinality(v_skipped) > 0 THEN
        -- Still RUNNING under the beat's lease as last committed: its row was locked.
        SELECT array_agg(j.id), array_agg(j.lease), array_agg(j.cancel_requested_at IS NOT NULL)
        INTO v_def_ids, v_def_leases, v_def_cancel
        FROM ingestion_jobs j
        JOIN (SELECT DISTINCT r.id, r.lease
              FROM unnest(p_job_ids, p_leases) AS r(id, lease)) r
          ON j.id = r.id AND j.lease = r.lease
        WHERE j.id = ANY (v_skipped) AND j.status = 'RUNNING';

        IF v_def_ids IS NOT NULL AND to_regclass('ingestion_job_deferred_beats') IS NOT NULL THEN
            -- Dynamic, so that 004 without 009 still works (see above).
            EXECUTE $q$
                INSERT INTO ingestion_job_deferred_beats AS d (job_id, lease, beat_at)
                SELECT * FROM unnest($1::uuid[], $2::bigint[]), LATERAL (SELECT $3) t
                ON CONFLICT (job_id, lease) DO UPDATE
                SET beat_at = greatest(d.beat_at, excluded.beat_at)
            $q$ USING v_def_ids, v_def_leases, v_now;
        END IF;
    END IF;

    -- Joined as arrays, whose size the plan knows, not as the UPDATE's result, which it takes
    -- for one row: a nested loop over it costs a batch of 1,000 beats a million comparisons.
    RETURN QUERY
    SELECT r.id,
           CASE WHEN u.id IS NOT NULL THEN CASE WHEN u.cancel THEN 'cancel' ELSE 'continue' END
                WHEN d.id IS NOT NULL THEN CASE WHEN d.cancel THEN 'cancel' ELSE 'deferred' END
                ELSE 'lease_lost' END
    FROM unnest(p_job_ids, p_leases) WITH ORDINALITY AS r(id, lease, ord)
    LEFT JOIN unnest(v_ids, v_leases, v_cancel) AS u(id, lease, cancel)
           ON u.id = r.id AND u.lease = r.lease
    LEFT JOIN unnest(v_def_ids, v_def_leases, v_def_cancel) AS d(id, lease, cancel)
           ON d.id = r.id AND d.lease = r.lease
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
