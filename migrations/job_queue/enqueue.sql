-- job_queue/enqueue.sql, included by 004: Enqueue (-> QUEUED).

-- ---------------------------------------------------------------------------------------------
-- Enqueue. The idempotency key is the caller's, or a hash of queue and input (jsonb's text form
-- is canonical: key order and white space do not change it). Conflicts are resolved by the
-- unique index, never by a read-then-insert, so any number of concurrent enqueues of one key
-- make one row and all of them get its id. New jobs are announced (notify_queue): those that
-- may run now wake waiting claimers, later ones arm their due timer; a known key changes
-- nothing and wakes no one.
--
-- The answer is lean, one row per entry in request order: the job's id, whether it already
-- existed, its status, max_attempts, key, run_after and created_at. The caller sent everything else of a new
-- job; an existing one is read in full by id (get_jobs in queue_service/sql/queries.sql).
--
-- No statement here scans the job table, so no cached plan can grow with it: the INSERT's
-- RETURNING names the new jobs, and only known keys (none, on the common path) are looked up
-- again, by an EXECUTE planned at that call for the table as it is (claim.sql says why a cached
-- plan would not do): one probe of the key index per key.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION ingestion_job_key(p_queue text, p_input jsonb, p_key text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(
        nullif(p_key, ''),
        encode(sha256(convert_to(p_queue || E'\n' || p_input::text, 'UTF8')), 'hex')
    )
$$;

-- enqueue_jobs answered with whole rows before; CREATE OR REPLACE cannot change a result type.
DO $$
BEGIN
    IF pg_get_function_result(to_regprocedure(
           'enqueue_jobs(jsonb[], text[], integer[], integer[], text[], timestamptz[])'))
       LIKE '%ingestion_jobs%' THEN
        DROP FUNCTION enqueue_jobs(jsonb[], text[], integer[], integer[], text[], timestamptz[]);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION enqueue_jobs(
    p_inputs        jsonb[],
    p_queues        text[],
    p_priorities    integer[],
    p_max_attempts  integer[],
    p_keys          text[],
    p_run_afters    timestamptz[]
)
RETURNS TABLE (
    job_id          uuid,
    already_existed boolean,
    status          text,
    max_attempts    integer,
    idempotency_key text,
    run_after       timestamptz,
    created_at      timestamptz
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now        timestamptz := clock_timestamp();
    v_keys       text[];
    v_new_ids    uuid[];
    v_new_keys   text[];
    v_new_tries  integer[];
    v_new_queues text[];
    v_new_due    timestamptz[];
    v_known      text[];
    v_old_ids    uuid[];
    v_old_keys   text[];
    v_old_status text[];
    v_old_tries  integer[];
    v_old_due    timestamptz[];
    v_old_made   timestamptz[];
BEGIN
    v_keys := ARRAY(
        SELECT ingestion_job_key(coalesce(nullif(r.queue, ''), 'default'), r.input, r.key)
        FROM unnest(p_queues, p_inputs, p_keys) WITH ORDINALITY AS r(queue, input, key, ord)
        ORDER BY r.ord);

    -- In request order, so that of two entries with one key in a call, the first is the job.
    WITH ins AS (
        INSERT INTO ingestion_jobs AS j
            (queue, priority, max_attempts, input, idempotency_key, run_after, created_at, updated_at)
        SELECT coalesce(nullif(r.queue, ''), 'default'), coalesce(r.priority, 0),
               coalesce(nullif(r.max_attempts, 0), 5), r.input, r.key,
               coalesce(r.run_after, v_now), v_now, v_now
        FROM unnest(p_inputs, p_queues, p_priorities, p_max_attempts, v_keys, p_run_afters)
             WITH ORDINALITY AS r(input, queue, priority, max_attempts, key, run_after, ord)
        ORDER BY r.ord
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING j.id, j.idempotency_key, j.max_attempts, j.queue, j.run_after
    )
    SELECT array_agg(ins.id), array_agg(ins.idempotency_key), array_agg(ins.max_attempts),
           array_agg(ins.queue), array_agg(ins.run_after)
    INTO v_new_ids, v_new_keys, v_new_tries, v_new_queues, v_new_due
    FROM ins;

    PERFORM notify_queue(v_new_queues, v_new_due, v_now);

    v_known := ARRAY(SELECT unnest(v_keys) EXCEPT SELECT unnest(v_new_keys));
    IF v_known <> '{}' THEN
        -- A new statement, so a new snapshot: it sees rows that a concurrent enqueue of the same
        -- key committed while the INSERT above waited on it.
        EXECUTE 'SELECT array_agg(e.id), array_agg(e.idempotency_key), array_agg(e.status),
                        array_agg(e.max_attempts), array_agg(e.run_after), array_agg(e.created_at)
                 FROM ingestion_jobs e
                 WHERE e.idempotency_key = ANY ($1)'
        INTO v_old_ids, v_old_keys, v_old_status, v_old_tries, v_old_due, v_old_made
        USING v_known;
    END IF;

    RETURN QUERY
    SELECT coalesce(n.id, o.id),
           n.id IS NULL OR k.ord > k.first_ord,
           coalesce(n.status, o.status),
           coalesce(n.max_attempts, o.max_attempts),
           k.key,
           coalesce(n.run_after, o.run_after),
           coalesce(n.created_at, o.created_at)
    FROM (
        SELECT t.key, t.ord, min(t.ord) OVER (PARTITION BY t.key) AS first_ord
        FROM unnest(v_keys) WITH ORDINALITY AS t(key, ord)
    ) k
    LEFT JOIN (SELECT u.*, 'QUEUED' AS status, v_now AS created_at
               FROM unnest(v_new_ids, v_new_keys, v_new_tries, v_new_due)
                    AS u(id, key, max_attempts, run_after)) n
           ON n.key = k.key
    LEFT JOIN unnest(v_old_ids, v_old_keys, v_old_status, v_old_tries, v_old_due, v_old_made)
              AS o(id, key, status, max_attempts, run_after, created_at)
           ON o.key = k.key
    ORDER BY k.ord;
END
$$;

CREATE OR REPLACE FUNCTION enqueue_job(
    p_input         jsonb,
    p_queue         text        DEFAULT 'default',
    p_priority      integer     DEFAULT 0,
    p_max_attempts  integer     DEFAULT 5,
    p_key           text        DEFAULT NULL,
    p_run_after     timestamptz DEFAULT NULL
)
RETURNS TABLE (job_id uuid, status text, already_existed boolean)
LANGUAGE sql
AS $$
    SELECT e.job_id, e.status, e.already_existed
    FROM enqueue_jobs(ARRAY[p_input], ARRAY[p_queue], ARRAY[p_priority], ARRAY[p_max_attempts],
                      ARRAY[p_key], ARRAY[p_run_after]) e
$$;
