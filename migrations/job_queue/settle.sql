-- job_queue/settle.sql, included by 004: what complete_job, fail_job and release_job share.

-- ---------------------------------------------------------------------------------------------
-- settle_outcomes: the answer of a settle of RUNNING jobs (complete, fail, release), one row per
-- entry of the call, in input order:
--   'ok'          the entry's UPDATE matched (id, lease, RUNNING); with the settled row
--   'lease_lost'  the job exists but was not RUNNING under this lease: nothing changed; with the
--                 row as it is now
--   'not_found'   no such job; with NULL
--   'locked'      the job is still RUNNING under this lease as last committed, so its row was
--                 skipped because another transaction holds it (the callers lock rows FOR NO
--                 KEY UPDATE SKIP LOCKED, then wait a moment for the skipped ones:
--                 settle_wait_for_locks below; a StoreAdvert's FOR SHARE, an operator's open
--                 psql transaction); nothing changed, the caller may try again later; with the
--                 row as last committed
-- p_settled holds the rows that the caller's UPDATE returned: an entry is settled exactly when
-- its (id, lease) is among them. A job already in p_repeat_status under the entry's lease was
-- settled by this same caller before (only the lease's owner can settle under it): complete_job
-- passes 'SUCCEEDED', so a repeated Complete, after an answer lost in transit, is 'ok' too.
-- Settled jobs that are QUEUED (a release) or RETRY are announced (notify_queue): at once when
-- they may run now, as a due time when their backoff runs out later. p_now is the caller's
-- clock, read once per call.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION settle_outcomes(
    p_job_ids       uuid[],
    p_leases        bigint[],
    p_settled       ingestion_jobs[],
    p_now           timestamptz,
    p_repeat_status text DEFAULT NULL
)
RETURNS TABLE (job_id uuid, outcome text, status text, job ingestion_jobs)
LANGUAGE plpgsql
-- Its own setting, not its callers' force_custom_plan (which a nested call would inherit): its
-- cached plans read no table, and its one read of the table is an EXECUTE, planned per call.
SET plan_cache_mode = auto
AS $$
#variable_conflict use_column
DECLARE
    v_queues     text[];
    v_run_afters timestamptz[];
    v_unsettled  uuid[];
BEGIN
    SELECT array_agg(s.queue), array_agg(s.run_after) INTO v_queues, v_run_afters
    FROM unnest(p_settled) s
    WHERE s.status IN ('QUEUED', 'RETRY');
    IF v_queues IS NOT NULL THEN
        PERFORM notify_queue(v_queues, v_run_afters, p_now);
    END IF;

    -- The common call: every entry settled. A job settles at most once per call (it is no
    -- longer RUNNING after), under one lease, so as many settled rows as entries means that
    -- each entry has its own: the answer is the settled rows in the entries' order, and nothing
    -- more is read from the table. No statement up to here reads the table, so their cached
    -- plans are safe at any depth (the function is not planned per call).
    IF cardinality(p_settled) = cardinality(p_job_ids) THEN
        RETURN QUERY
        SELECT s.id, 'ok'::text, s.status, s
        FROM unnest(p_job_ids) WITH ORDINALITY AS r(id, ord)
        JOIN unnest(p_settled) s ON s.id = r.id
        ORDER BY r.ord;
        RETURN;
    END IF;

    -- Some entry did not settle: only those are answered with the job as it is now, read by
    -- id. That statement is planned at this call (EXECUTE), for the table as it is now
    -- (docs/state-machine.md, "Plans"), so it stays a probe of the primary key at any depth.
    v_unsettled := ARRAY(
        SELECT u.id
        FROM (SELECT r.id, r.lease FROM unnest(p_job_ids, p_leases) AS r(id, lease)
              EXCEPT
              SELECT s.id, s.lease FROM unnest(p_settled) s) u);

    RETURN QUERY EXECUTE $q$
    SELECT r.id,
           CASE WHEN s.id IS NOT NULL THEN 'ok'
                WHEN cur.id IS NULL THEN 'not_found'
                WHEN cur.status = $4 AND cur.lease = r.lease THEN 'ok'
                WHEN cur.status = 'RUNNING' AND cur.lease = r.lease THEN 'locked'
                ELSE 'lease_lost' END,
           coalesce(s.status, cur.status),
           CASE WHEN s.id IS NOT NULL THEN s WHEN cur.id IS NOT NULL THEN cur END
    FROM unnest($1, $2) WITH ORDINALITY AS r(id, lease, ord)
    LEFT JOIN unnest($3) s ON s.id = r.id AND s.lease = r.lease
    LEFT JOIN ingestion_jobs cur ON cur.id = r.id AND cur.id = ANY ($5)
    ORDER BY r.ord
    $q$ USING p_job_ids, p_leases, p_settled, p_repeat_status, v_unsettled;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- A settle's UPDATE (complete_job, fail_job, release_job) finds the rows its CTE locked by id
-- and lease alone, one probe of the primary key each. With the CTE's `status = 'RUNNING'` in
-- its WHERE too, it gave the planner a second way in, every RUNNING row (read through an index
-- on the status) against every entry as a nested loop, and the planner took it whenever the
-- statistics said that few jobs run (they were last analyzed while the jobs waited): a
-- complete of 500 compared 250,000 pairs and took 50 ms instead of 10
-- (tests/queue/test_plans.py). The status is checked where the row is locked, and the lock
-- keeps it RUNNING under the entry's lease until the UPDATE, as in update_job_heartbeat.
-- ---------------------------------------------------------------------------------------------

-- ---------------------------------------------------------------------------------------------
-- settle_wait_for_locks: a settle's second chance for the rows its first pass skipped. The
-- first pass locks FOR NO KEY UPDATE SKIP LOCKED; a row can be held for a moment by a
-- concurrent claim's scan or a heartbeat's statement, and it should not come back 'locked' for
-- that. So the rows of the entries still RUNNING under their lease (as committed now: the first
-- pass's own rows are no longer RUNNING) are locked here, waiting at most
-- settle_lock_wait_ms() for each (never longer than the session's own lock_timeout). True when
-- all were locked: the caller runs its UPDATE once more, and they settle. False when there was
-- nothing to wait for or a lock was still held at the end of the wait (a StoreAdvert's, an
-- operator's open transaction): those entries are answered 'locked'. A row held for long thus
-- costs its statement one short wait, never the lock's whole length.
-- ---------------------------------------------------------------------------------------------

-- 100 ms, unless the setting jobqueue.settle_lock_wait_ms says otherwise (a database, role or
-- session may set it: ALTER DATABASE ... SET jobqueue.settle_lock_wait_ms = '50').
CREATE OR REPLACE FUNCTION settle_lock_wait_ms()
RETURNS integer
LANGUAGE sql STABLE
AS $$ SELECT coalesce(nullif(current_setting('jobqueue.settle_lock_wait_ms', true), '')::integer, 100) $$;

CREATE OR REPLACE FUNCTION settle_wait_for_locks(p_job_ids uuid[], p_leases bigint[])
RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    v_skipped uuid[];
    v_timeout text := current_setting('lock_timeout');
    v_wait_ms integer := settle_lock_wait_ms();
    v_set_ms  double precision;
BEGIN
    v_skipped := ARRAY(
        SELECT DISTINCT j.id
        FROM unnest(p_job_ids, p_leases) AS r(id, lease)
        JOIN ingestion_jobs j ON j.id = r.id AND j.lease = r.lease AND j.status = 'RUNNING');
    IF cardinality(v_skipped) = 0 THEN
        RETURN false;
    END IF;
    v_set_ms := extract(epoch FROM v_timeout::interval) * 1000;
    IF v_set_ms > 0 AND v_set_ms < v_wait_ms THEN
        v_wait_ms := greatest(1, v_set_ms::integer);
    END IF;
    BEGIN
        PERFORM set_config('lock_timeout', v_wait_ms || 'ms', true);
        PERFORM 1 FROM ingestion_jobs j WHERE j.id = ANY (v_skipped) ORDER BY j.id
        FOR NO KEY UPDATE;
        PERFORM set_config('lock_timeout', v_timeout, true);
    EXCEPTION WHEN lock_not_available THEN
        PERFORM set_config('lock_timeout', v_timeout, true);
        RETURN false;
    END;
    RETURN true;
END
$$;
