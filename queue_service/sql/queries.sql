-- Every query the queue service runs, by name. The state machine itself lives in the SQL
-- functions of migrations/job_queue/ (one file per transition, included by migration 004;
-- docs/state-machine.md maps them); these only call them with bound parameters and shape the
-- rows.
-- `(r.job).*` expands the job row a function returned, so a transition and its result are one
-- round trip.

-- name: enqueue
SELECT r.already_existed, (r.job).*
FROM enqueue_jobs(%(inputs)s::jsonb[], %(queues)s::text[], %(priorities)s::integer[],
                  %(max_attempts)s::integer[], %(keys)s::text[], %(run_afters)s::timestamptz[]) r;

-- name: claim
SELECT * FROM claim_jobs(%(worker_id)s, %(limit)s, %(queue)s);

-- name: heartbeat
SELECT job_id, action
FROM update_job_heartbeat(%(job_ids)s::uuid[], %(leases)s::bigint[], %(stages)s::text[],
                          %(progress)s::double precision[]);

-- name: complete
SELECT c.job_id AS entry_job_id, c.outcome, (c.job).*
FROM complete_job(%(job_ids)s::uuid[], %(leases)s::bigint[], %(outputs)s::jsonb[]) c;

-- name: fail
SELECT f.job_id AS entry_job_id, f.outcome, (f.job).*
FROM fail_job(%(job_ids)s::uuid[], %(leases)s::bigint[], %(codes)s::text[], %(messages)s::text[],
              %(retryable)s::boolean[], %(retry_after)s::double precision[],
              %(backoff_base)s, %(backoff_max)s) f;

-- name: release
SELECT r.job_id AS entry_job_id, r.outcome, (r.job).*
FROM release_job(%(job_ids)s::uuid[], %(leases)s::bigint[], %(reasons)s::text[]) r;

-- name: cancel
SELECT r.outcome, (r.job).* FROM cancel_job(%(job_id)s) r;

-- name: retry
SELECT r.outcome, (r.job).* FROM retry_job(%(job_id)s) r;

-- name: get_job
SELECT * FROM ingestion_jobs WHERE id = %(job_id)s;

-- name: get_jobs
SELECT * FROM ingestion_jobs WHERE id = ANY(%(job_ids)s::uuid[]);

-- name: list_jobs
-- Newest first; the page token is the (created_at, id) of the last row of the previous page,
-- so pages stay stable while jobs are added.
SELECT *
FROM ingestion_jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: queue_stats
SELECT
    coalesce((SELECT jsonb_object_agg(status, n)
              FROM (SELECT status, count(*) AS n
                    FROM ingestion_jobs
                    WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
                    GROUP BY status) s), '{}'::jsonb) AS by_status,
    (SELECT count(*)
     FROM ingestion_jobs
     WHERE status = 'RUNNING'
       AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
       AND ingestion_job_stale_reason(last_heartbeat_at, locked_at, clock_timestamp(),
                                      %(heartbeat_timeout)s, NULL) = 'HEARTBEAT_TIMEOUT')
        AS stale_running,
    (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(run_after)), 0)
     FROM ingestion_jobs
     WHERE status IN ('QUEUED', 'RETRY')
       AND run_after <= clock_timestamp()
       AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)) AS oldest_runnable_age_seconds;

-- name: running_jobs
SELECT j.*,
       extract(epoch FROM clock_timestamp() - coalesce(j.processing_started_at, j.locked_at))
           AS running_seconds,
       extract(epoch FROM clock_timestamp() - coalesce(j.last_heartbeat_at, j.locked_at))
           AS heartbeat_age_seconds
FROM ingestion_jobs j
WHERE j.status = 'RUNNING'
  AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
ORDER BY j.locked_at, j.id;

-- name: release_stale
SELECT job_id, reason, status
FROM release_stale_jobs(%(heartbeat_timeout)s, %(lock_timeout)s);

-- name: ping
SELECT 1;
