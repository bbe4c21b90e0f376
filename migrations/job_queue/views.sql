-- job_queue/views.sql, included by 004: the monitoring views.

-- ---------------------------------------------------------------------------------------------
-- Monitoring views: what an operator reads in psql (the checklist's "Production Monitoring").
-- Dropped and re-created so that a later column change re-applies cleanly.
-- ---------------------------------------------------------------------------------------------

DROP VIEW IF EXISTS dead_letter_jobs;
CREATE VIEW dead_letter_jobs AS
SELECT id, queue, attempts, max_attempts, error_code, last_error, errors, input, locked_by,
       stage, created_at, completed_at AS failed_at
FROM ingestion_jobs
WHERE status = 'FAILED'
ORDER BY completed_at DESC;

DROP VIEW IF EXISTS job_queue_stats;
CREATE VIEW job_queue_stats AS
SELECT queue, status, count(*) AS count,
       min(created_at) AS oldest_created_at,
       max(created_at) AS newest_created_at,
       round(avg(attempts), 2) AS avg_attempts
FROM ingestion_jobs
GROUP BY queue, status
ORDER BY queue, status;

DROP VIEW IF EXISTS running_jobs_monitor;
CREATE VIEW running_jobs_monitor AS
SELECT id, stage, round(progress::numeric, 2) AS progress,
       extract(epoch FROM now() - coalesce(processing_started_at, locked_at))::int
           AS running_seconds,
       extract(epoch FROM now() - coalesce(last_heartbeat_at, locked_at))::int
           AS heartbeat_age_seconds,
       queue, locked_by, attempts, max_attempts, locked_at, last_heartbeat_at,
       cancel_requested_at IS NOT NULL AS cancel_requested, input
FROM ingestion_jobs
WHERE status = 'RUNNING'
ORDER BY locked_at;

DROP VIEW IF EXISTS job_timing_stats;
CREATE VIEW job_timing_stats AS
WITH timed AS (
    SELECT status,
           extract(epoch FROM processing_completed_at - processing_started_at) AS seconds
    FROM ingestion_jobs
    WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
      AND processing_started_at IS NOT NULL
      AND processing_completed_at IS NOT NULL
)
SELECT status, count(*) AS count,
       round(avg(seconds), 1) AS avg_duration_seconds,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds))::numeric, 1) AS p50_seconds,
       round((percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds))::numeric, 1) AS p95_seconds
FROM timed
GROUP BY status
ORDER BY status;

DROP VIEW IF EXISTS stage_distribution;
CREATE VIEW stage_distribution AS
SELECT status, stage, count(*) AS count,
       round(avg(progress)::numeric, 2) AS avg_progress,
       max(extract(epoch FROM now() - last_heartbeat_at))
           FILTER (WHERE status = 'RUNNING')::int AS max_heartbeat_age_seconds
FROM ingestion_jobs
GROUP BY status, stage
ORDER BY status, count(*) DESC;
