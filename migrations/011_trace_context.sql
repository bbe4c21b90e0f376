-- 011: each job keeps the trace context of the call that enqueued it.
--
-- With tracing on (OTEL_EXPORTER_OTLP_ENDPOINT set, jobqueue/tracing.py), the queue service
-- stores the W3C traceparent of an EnqueueJob call with each new job, and hands it to the worker
-- that claims the job (Job.trace_context), so that the REST request, the enqueue, the claim,
-- every stage and the Complete of one advert are one trace, however long the job waited in
-- between. NULL for a job enqueued with tracing off (the common case: nothing is written then).
--
-- enqueue_jobs_traced is enqueue_jobs (job_queue/enqueue.sql) plus the contexts: it writes them
-- in the same statement, so the job is committed (and announced to claimers) with its context,
-- and a worker can never claim it before the context is there. A job that already existed keeps
-- the context of the call that made it.
--
-- Safe to re-apply: the column is added only when missing, the function is replaced.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/011_trace_context.sql

BEGIN;

-- Adding a nullable column without a default rewrites nothing; the lock is brief, but never
-- queue behind a long transaction holding it: fail the migration instead, to be retried.
SET LOCAL lock_timeout = '5s';

ALTER TABLE ingestion_jobs ADD COLUMN IF NOT EXISTS trace_context text;

COMMENT ON COLUMN ingestion_jobs.trace_context IS
    'W3C traceparent of the call that enqueued the job (tracing on), NULL otherwise';

CREATE OR REPLACE FUNCTION enqueue_jobs_traced(
    p_inputs         jsonb[],
    p_queues         text[],
    p_priorities     integer[],
    p_max_attempts   integer[],
    p_keys           text[],
    p_run_afters     timestamptz[],
    p_trace_contexts text[]
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
    v_entry    record;
    v_ids      uuid[] := '{}';
    v_contexts text[] := '{}';
BEGIN
    FOR v_entry IN
        SELECT e.job_id AS id, e.already_existed AS known, e.status AS st, e.max_attempts AS tries,
               e.idempotency_key AS key, e.run_after AS due, e.created_at AS made,
               t.context
        FROM enqueue_jobs(p_inputs, p_queues, p_priorities, p_max_attempts, p_keys, p_run_afters)
             WITH ORDINALITY AS e(job_id, already_existed, status, max_attempts, idempotency_key,
                                  run_after, created_at, ord)
        LEFT JOIN unnest(p_trace_contexts) WITH ORDINALITY AS t(context, ord) ON t.ord = e.ord
        ORDER BY e.ord
    LOOP
        IF NOT v_entry.known AND coalesce(v_entry.context, '') <> '' THEN
            v_ids := v_ids || v_entry.id;
            v_contexts := v_contexts || v_entry.context;
        END IF;
        job_id := v_entry.id;
        already_existed := v_entry.known;
        status := v_entry.st;
        max_attempts := v_entry.tries;
        idempotency_key := v_entry.key;
        run_after := v_entry.due;
        created_at := v_entry.made;
        RETURN NEXT;
    END LOOP;

    UPDATE ingestion_jobs j
    SET trace_context = c.context
    FROM unnest(v_ids, v_contexts) AS c(id, context)
    WHERE j.id = c.id;
END
$$;

COMMIT;
