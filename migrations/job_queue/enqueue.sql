-- job_queue/enqueue.sql, included by 004: Enqueue (-> QUEUED).

-- ---------------------------------------------------------------------------------------------
-- Enqueue. The idempotency key is the caller's, or a hash of queue and input (jsonb's text form
-- is canonical: key order and white space do not change it). Conflicts are resolved by the
-- unique index, never by a read-then-insert, so any number of concurrent enqueues of one key
-- make one row and all of them get its id. Each new job that may run at once (run_after not in
-- the future) wakes waiting claimers (notify_queue); a known key changes nothing and wakes no one.
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

CREATE OR REPLACE FUNCTION enqueue_jobs(
    p_inputs        jsonb[],
    p_queues        text[],
    p_priorities    integer[],
    p_max_attempts  integer[],
    p_keys          text[],
    p_run_afters    timestamptz[]
)
RETURNS TABLE (job ingestion_jobs, already_existed boolean)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_inserted text[];
    v_runnable text[];
BEGIN
    WITH req AS (
        SELECT r.input,
               coalesce(nullif(r.queue, ''), 'default') AS queue,
               coalesce(r.priority, 0) AS priority,
               coalesce(nullif(r.max_attempts, 0), 5) AS max_attempts,
               ingestion_job_key(coalesce(nullif(r.queue, ''), 'default'), r.input, r.key) AS key,
               coalesce(r.run_after, v_now) AS run_after
        FROM unnest(p_inputs, p_queues, p_priorities, p_max_attempts, p_keys, p_run_afters)
             AS r(input, queue, priority, max_attempts, key, run_after)
    ), ins AS (
        INSERT INTO ingestion_jobs AS j
            (queue, priority, max_attempts, input, idempotency_key, run_after, created_at, updated_at)
        SELECT queue, priority, max_attempts, input, key, run_after, v_now, v_now FROM req
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING j.idempotency_key, j.queue, j.run_after
    )
    SELECT array_agg(ins.idempotency_key),
           array_agg(ins.queue) FILTER (WHERE ins.run_after <= v_now)
    INTO v_inserted, v_runnable
    FROM ins;

    PERFORM notify_queue(v_runnable);

    -- A new statement, so a new snapshot: it sees rows that a concurrent enqueue of the same
    -- key committed while the INSERT above waited on it.
    RETURN QUERY
    SELECT j, NOT (k.key = ANY (coalesce(v_inserted, '{}')) AND k.ord = k.first_ord)
    FROM (
        SELECT key, ord, min(ord) OVER (PARTITION BY key) AS first_ord
        FROM unnest(
            ARRAY(SELECT ingestion_job_key(coalesce(nullif(q, ''), 'default'), i, k)
                  FROM unnest(p_queues, p_inputs, p_keys) AS x(q, i, k))
        ) WITH ORDINALITY AS t(key, ord)
    ) k
    JOIN ingestion_jobs j ON j.idempotency_key = k.key
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
    SELECT (e.job).id, (e.job).status, e.already_existed
    FROM enqueue_jobs(ARRAY[p_input], ARRAY[p_queue], ARRAY[p_priority], ARRAY[p_max_attempts],
                      ARRAY[p_key], ARRAY[p_run_after]) e
$$;
