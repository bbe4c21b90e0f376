-- Every query the queue service runs, by name. The state machine itself lives in the SQL
-- functions of migrations/job_queue/ (one file per transition, included by migration 004;
-- docs/state-machine.md maps them); these only call them with bound parameters and shape the
-- rows.
--
-- The hot path (enqueue, claim, heartbeat, complete, fail, release) is lean both ways: array
-- parameters go in binary (`%(x)b`: a text array of JSON documents costs ~20 us an element to
-- escape in text form, ~1 us in binary), and only the columns that the answer needs come back
-- (no input, output or errors history unless the caller needs it). queue_service/convert.py
-- reads these rows by position, in the order written here.
--
-- Job times are read through migration 013's ingestion_job_shown_time (a whole row through
-- ingestion_job_shown): a time beyond what a client can read ('infinity', year 0) shows as the
-- nearest one it can, so that one such row fails no answer that holds it.

-- name: enqueue
-- One statement enqueues and writes the audit entry of each job for whoever enqueued it
-- (012's admin_audit; an entry without a role is not written): a job and its entry commit
-- together, in one round trip. With tracing on, store.py runs this same statement around
-- enqueue_jobs_traced (011), which also keeps each new job's trace context. Inputs are JSON
-- text, which the cast parses: the service never builds them as objects.
WITH e AS MATERIALIZED (
    SELECT e.*
    FROM enqueue_jobs(%(inputs)b::text[]::jsonb[], %(queues)b::text[], %(priorities)b::integer[],
                      %(max_attempts)b::integer[], %(keys)b::text[], %(run_afters)b::timestamptz[])
         WITH ORDINALITY AS e(job_id, already_existed, status, max_attempts, idempotency_key,
                              run_after, created_at, ord)
), audited AS (
    INSERT INTO admin_audit (action, job_id, role, credential, operator, outcome)
    SELECT 'enqueue', e.job_id, c.role, c.credential, c.operator,
           CASE WHEN e.already_existed THEN 'already_existed' ELSE 'ok' END
    FROM e
    JOIN unnest(%(roles)b::text[], %(credentials)b::text[], %(operators)b::text[])
         WITH ORDINALITY AS c(role, credential, operator, ord) USING (ord)
    WHERE c.role IS NOT NULL
      AND e.job_id IS NOT NULL  -- a job deleted before its read-back: the call fails (store.py)
    ORDER BY e.ord
)
SELECT job_id::text, already_existed, status, max_attempts, idempotency_key,
       ingestion_job_shown_time(run_after), ingestion_job_shown_time(created_at)
FROM e
ORDER BY ord;

-- name: claim
-- Every column but output (NULL on a job that can be claimed) and the errors history; the
-- claim's own time is also the job's last_heartbeat_at, processing_started_at and updated_at.
SELECT id, queue, status, priority, attempts, max_attempts, ingestion_job_shown_time(run_after),
       locked_at, locked_by, input, idempotency_key, last_error, error_code, stage, progress,
       ingestion_job_shown_time(created_at), lease, trace_context
FROM claim_jobs(%(worker_id)s, %(limit)s, %(queue)s);

-- name: heartbeat
SELECT action
FROM update_job_heartbeat(%(job_ids)b::uuid[], %(leases)b::bigint[], %(stages)b::text[],
                          %(progress)b::double precision[]);

-- name: complete
SELECT c.job_id, c.outcome, c.status, (c.job).queue, (c.job).attempts, (c.job).max_attempts,
       (c.job).lease, (c.job).stage, (c.job).progress, (c.job).error_code, (c.job).last_error,
       (c.job).run_after, (c.job).locked_by, (c.job).completed_at, (c.job).updated_at
FROM complete_job(%(job_ids)b::uuid[], %(leases)b::bigint[], %(outputs)b::text[]::jsonb[]) c;

-- name: fail
SELECT f.job_id, f.outcome, f.status, (f.job).queue, (f.job).attempts, (f.job).max_attempts,
       (f.job).lease, (f.job).stage, (f.job).progress, (f.job).error_code, (f.job).last_error,
       (f.job).run_after, (f.job).locked_by, (f.job).completed_at, (f.job).updated_at
FROM fail_job(%(job_ids)b::uuid[], %(leases)b::bigint[], %(codes)b::text[], %(messages)b::text[],
              %(retryable)b::boolean[], %(retry_after)b::double precision[],
              %(backoff_base)s, %(backoff_max)s) f;

-- name: release
SELECT r.job_id, r.outcome, r.status, (r.job).queue, (r.job).attempts, (r.job).max_attempts,
       (r.job).lease, (r.job).stage, (r.job).progress, (r.job).error_code, (r.job).last_error,
       (r.job).run_after, (r.job).locked_by, (r.job).completed_at, (r.job).updated_at
FROM release_job(%(job_ids)b::uuid[], %(leases)b::bigint[], %(reasons)b::text[]) r;

-- name: next_due
-- When the next job of each queue comes due, in seconds from now (by the database's clock): a
-- waiting claim's timer (queue_service/claims.py). One descent of 006's ingestion_jobs_due_idx
-- per queue named. A job parked at run_after 'infinity' never comes due.
SELECT q.queue, extract(epoch FROM d.run_after - clock_timestamp())::double precision AS due_in
FROM unnest(%(queues)s::text[]) AS q(queue)
CROSS JOIN LATERAL (
    SELECT j.run_after
    FROM ingestion_jobs j
    WHERE j.queue = q.queue AND j.status IN ('QUEUED', 'RETRY') AND j.run_after > clock_timestamp()
      AND j.run_after < 'infinity'
    ORDER BY j.run_after
    LIMIT 1
) d;

-- name: cancel
SELECT r.outcome, s.* FROM cancel_job(%(job_id)s) r, ingestion_job_shown(r.job) s;

-- name: retry
SELECT r.outcome, s.* FROM retry_job(%(job_id)s) r, ingestion_job_shown(r.job) s;

-- name: get_job
SELECT s.* FROM ingestion_jobs j, ingestion_job_shown(j) s WHERE j.id = %(job_id)s;

-- name: get_jobs
SELECT s.* FROM ingestion_jobs j, ingestion_job_shown(j) s WHERE j.id = ANY(%(job_ids)s::uuid[]);

-- name: list_jobs
-- Newest first; the page token is the (created_at, id) of the last row of the previous page,
-- so pages stay stable while jobs are added (a token made from a created_at beyond the readable
-- range holds the nearest readable time: a page break on such a row may repeat or skip rows
-- that lie beyond the range too).
SELECT s.*
FROM ingestion_jobs j
CROSS JOIN LATERAL ingestion_job_shown(j) s
WHERE (%(status)s::text IS NULL OR j.status = %(status)s::text)
  AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (j.created_at, j.id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY j.created_at DESC, j.id DESC
LIMIT %(limit)s;

-- name: queue_stats
-- Reads no finished job: the counts are 008's ingestion_job_counts (a few rows per queue and
-- status), stale_running walks the RUNNING jobs (003's running index) and the oldest runnable
-- job is the first of the QUEUED and RETRY ones (006's due index). stale_running counts by the
-- sweep's rule, a beat that met a row lock (009's deferred beats, of the current claim)
-- included, so it counts what the next sweep releases.
SELECT
    coalesce((SELECT jsonb_object_agg(status, n)
              FROM (SELECT status, sum(n) AS n
                    FROM ingestion_job_counts
                    WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
                    GROUP BY status) s), '{}'::jsonb) AS by_status,
    (SELECT count(*)
     FROM ingestion_jobs j
     LEFT JOIN ingestion_job_deferred_beats d ON d.job_id = j.id AND d.lease = j.lease
     WHERE j.status = 'RUNNING'
       AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
       AND ingestion_job_stale_reason(greatest(j.last_heartbeat_at, d.beat_at), j.locked_at,
                                      clock_timestamp(), %(heartbeat_timeout)s, NULL)
           = 'HEARTBEAT_TIMEOUT')
        AS stale_running,
    (SELECT coalesce(extract(epoch FROM clock_timestamp()
                                        - ingestion_job_shown_time(min(run_after))), 0)
     FROM ingestion_jobs
     WHERE status IN ('QUEUED', 'RETRY')
       AND run_after <= clock_timestamp()
       AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)) AS oldest_runnable_age_seconds;

-- name: running_jobs
-- The earliest claimed first; the page token is the (locked_at, id) of the last row of the
-- previous page.
SELECT s.*,
       extract(epoch FROM clock_timestamp() - coalesce(s.processing_started_at, s.locked_at))
           AS running_seconds,
       extract(epoch FROM clock_timestamp() - coalesce(s.last_heartbeat_at, s.locked_at))
           AS heartbeat_age_seconds
FROM ingestion_jobs j
CROSS JOIN LATERAL ingestion_job_shown(j) s
WHERE j.status = 'RUNNING'
  AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
  AND (%(after_locked_at)s::timestamptz IS NULL
       OR (j.locked_at, j.id) > (%(after_locked_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY j.locked_at, j.id
LIMIT %(limit)s;

-- name: release_stale
-- With each job's queue, for the metrics' released counts (one key probe per released job).
SELECT r.job_id, r.reason, r.status,
       (SELECT j.queue FROM ingestion_jobs j WHERE j.id = r.job_id) AS queue
FROM release_stale_jobs(%(heartbeat_timeout)s, %(lock_timeout)s) r;

-- name: job_table
-- The metrics' gauges (queue_service/metrics.py, cached between scrapes), reading no finished
-- job: the counts are 008's ingestion_job_counts; the oldest heartbeat walks a queue's RUNNING
-- jobs (003's running index) and the longest wait of a job due now is the first entry of the
-- queue in 006's due index.
WITH counts AS (
    SELECT queue, status, sum(n)::bigint AS count
    FROM ingestion_job_counts
    GROUP BY queue, status
    HAVING sum(n) <> 0
)
SELECT c.queue, c.status, c.count,
       CASE WHEN c.status = 'RUNNING' THEN
           (SELECT coalesce(extract(epoch FROM clock_timestamp()
                                    - min(coalesce(j.last_heartbeat_at, j.locked_at))), 0)
            FROM ingestion_jobs j
            WHERE j.status = 'RUNNING' AND j.queue = c.queue)
       ELSE 0 END::float8 AS heartbeat_age,
       CASE WHEN c.status IN ('QUEUED', 'RETRY') THEN
           (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(j.run_after)), 0)
            FROM ingestion_jobs j
            WHERE j.status IN ('QUEUED', 'RETRY') AND j.queue = c.queue
              AND j.run_after <= clock_timestamp())
       ELSE 0 END::float8 AS runnable_age
FROM counts c;

-- name: release_lost
-- Jobs whose worker's heartbeat stream broke, each `silent` seconds ago (queue_service/orphans.py).
SELECT job_id, lease, status
FROM release_lost_jobs(%(job_ids)b::uuid[], %(leases)b::bigint[],
                       %(silent)b::double precision[]);

-- name: prune_finished
-- Retention: deletes up to %(batch)s jobs in one finished status that finished more than %(age)s
-- seconds ago (queue_service/upkeep.py). 003's (status, created_at) index finds them: a job
-- finishes after it is created, so every one that finished before the cutoff was created
-- before it. Rows locked by a transition or an operator right now are skipped, not waited on.
-- Adverts are not touched: 005 gives them no foreign key to their job.
WITH doomed AS (
    SELECT j.id
    FROM ingestion_jobs j
    WHERE j.status = %(status)s::text
      AND j.created_at < now() - make_interval(secs => %(age)s)
      AND j.completed_at < now() - make_interval(secs => %(age)s)
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM ingestion_jobs j
    WHERE j.id = ANY (ARRAY(SELECT doomed.id FROM doomed))
    RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: prune_audit
-- Retention of the audit trail: deletes those of its %(batch)s oldest entries (by id, which
-- grows with `at`) that were written more than %(age)s seconds ago. Looking only at the oldest
-- makes each statement a short walk of the primary key, however long the trail is; an entry
-- older than one before it (a clock step back) waits for that one.
WITH oldest AS (
    SELECT a.id, a.at FROM admin_audit a ORDER BY a.id LIMIT %(batch)s
), gone AS (
    DELETE FROM admin_audit a
    WHERE a.id = ANY (ARRAY(SELECT oldest.id FROM oldest
                            WHERE oldest.at < now() - make_interval(secs => %(age)s)))
    RETURNING 1
)
SELECT count(*) AS deleted FROM gone;

-- name: fold_counts
-- 008's count deltas replaced by their sums (queue_service/upkeep.py, every few seconds).
SELECT fold_job_counts() AS folded;

-- name: ping
SELECT 1;
