-- job_queue/enqueue.sql, included by 004: Enqueue (-> QUEUED).

-- ---------------------------------------------------------------------------------------------
-- Enqueue. The idempotency key is the caller's, or a hash of queue and input (jsonb's text form
-- is canonical: key order and white space do not change it). A key names one job within its
-- queue (the same caller key in two queues makes two jobs), and a caller may not send a key of
-- the derived form (64 lowercase hex characters: 22023 invalid_parameter_value), so that no
-- caller's key can capture the enqueues of another input (007_idempotency_namespaces.sql).
-- Conflicts are resolved by the unique index, never by a read-then-insert, so any number of
-- concurrent enqueues of one key make one row and all of them get its id. New jobs are announced (notify_queue): those that
-- may run now wake waiting claimers, later ones arm their due timer; a known key changes
-- nothing and wakes no one.
--
-- The answer is lean, one row per entry in request order: the job's id, whether it already
-- existed, its status, max_attempts, key, run_after and created_at. The caller sent everything
-- else of a new job; an existing one is read in full by id (get_jobs in
-- queue_service/sql/queries.sql).
--
-- Each entry's id is chosen before the INSERT, so when the INSERT took every entry (the common
-- call) the answer is the entries themselves: no statement here then reads the job table, and
-- no cached plan can come to scan it as it grows. Known keys (or a key repeated within the call)
-- are looked up by an EXECUTE, planned at that call for the table as it is (a cached plan would
-- not do: docs/state-machine.md, "Plans"): one probe of the key index per entry.
-- ---------------------------------------------------------------------------------------------

-- STABLE, as convert_to is: so that it is inlined into the statement that calls it (an
-- IMMUTABLE function with a STABLE body is called once per row instead, at several times the
-- cost). The key it makes is the same.
CREATE OR REPLACE FUNCTION ingestion_job_key(p_queue text, p_input jsonb, p_key text)
RETURNS text
LANGUAGE sql STABLE
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
    v_ids        uuid[];
    v_queues     text[];
    v_tries      integer[];
    v_keys       text[];
    v_due        timestamptz[];
    v_new_ids    uuid[];
    v_new_queues text[];
    v_new_due    timestamptz[];
BEGIN
    -- A caller's key of the derived form would name another input's job: refused, whole call.
    IF EXISTS (SELECT 1 FROM unnest(p_keys) AS k(key)
               WHERE length(k.key) = 64 AND k.key ~ '^[0-9a-f]{64}$') THEN
        RAISE EXCEPTION 'an idempotency key of 64 lowercase hex characters is reserved for the '
                        'keys derived from queue and input; send another form (e.g. a prefix)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Each entry as it is to be stored, in request order.
    SELECT array_agg(e.id), array_agg(e.queue), array_agg(e.max_attempts), array_agg(e.key),
           array_agg(e.run_after)
    INTO v_ids, v_queues, v_tries, v_keys, v_due
    FROM (
        SELECT gen_random_uuid() AS id, q.queue,
               coalesce(nullif(r.max_attempts, 0), 5) AS max_attempts,
               ingestion_job_key(q.queue, r.input, r.key) AS key,
               coalesce(r.run_after, v_now) AS run_after
        FROM unnest(p_queues, p_inputs, p_max_attempts, p_keys, p_run_afters) WITH ORDINALITY
             AS r(queue, input, max_attempts, key, run_after, ord)
        CROSS JOIN LATERAL (SELECT coalesce(nullif(r.queue, ''), 'default') AS queue) q
        ORDER BY r.ord
    ) e;

    -- In request order, so that of two entries with one key in a call, the first is the job.
    WITH ins AS (
        INSERT INTO ingestion_jobs AS j
            (id, queue, priority, max_attempts, input, idempotency_key, run_after, created_at,
             updated_at)
        SELECT r.id, r.queue, coalesce(r.priority, 0), r.max_attempts, r.input, r.key,
               r.run_after, v_now, v_now
        FROM unnest(v_ids, v_queues, p_priorities, v_tries, p_inputs, v_keys, v_due)
             WITH ORDINALITY AS r(id, queue, priority, max_attempts, input, key, run_after, ord)
        ORDER BY r.ord
        -- Whichever unique index holds the keys (queue and key since 007, the key alone before):
        -- the existing job is looked up by queue and key below.
        ON CONFLICT DO NOTHING
        RETURNING j.id, j.queue, j.run_after
    )
    SELECT array_agg(ins.id), array_agg(ins.queue), array_agg(ins.run_after)
    INTO v_new_ids, v_new_queues, v_new_due
    FROM ins;

    PERFORM notify_queue(v_new_queues, v_new_due, v_now);

    IF cardinality(v_new_ids) = cardinality(v_ids) THEN
        RETURN QUERY
        SELECT e.id, false, 'QUEUED'::text, e.max_attempts, e.key, e.run_after, v_now
        FROM unnest(v_ids, v_tries, v_keys, v_due) WITH ORDINALITY
             AS e(id, max_attempts, key, run_after, ord)
        ORDER BY e.ord;
        RETURN;
    END IF;

    -- A new statement, so a new snapshot: it sees rows that a concurrent enqueue of the same
    -- key committed while the INSERT above waited on it.
    RETURN QUERY EXECUTE
        'SELECT CASE WHEN n.id IS NULL THEN j.id ELSE e.id END,
                n.id IS NULL,
                CASE WHEN n.id IS NULL THEN j.status ELSE ''QUEUED'' END,
                CASE WHEN n.id IS NULL THEN j.max_attempts ELSE e.max_attempts END,
                e.key,
                CASE WHEN n.id IS NULL THEN j.run_after ELSE e.run_after END,
                CASE WHEN n.id IS NULL THEN j.created_at ELSE $5 END
         FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::timestamptz[], $7::text[])
              WITH ORDINALITY AS e(id, max_attempts, key, run_after, queue, ord)
         LEFT JOIN unnest($6::uuid[]) AS n(id) ON n.id = e.id
         LEFT JOIN ingestion_jobs j
                ON j.queue = e.queue AND j.idempotency_key = e.key AND n.id IS NULL
         ORDER BY e.ord'
        USING v_ids, v_tries, v_keys, v_due, v_now, coalesce(v_new_ids, '{}'), v_queues;
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
