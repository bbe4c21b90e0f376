-- 013: job times as a client can read them.
--
-- A timestamptz column holds more than any reader of the service can: 'infinity' and
-- '-infinity' (an operator parks a job with run_after = 'infinity', which never comes due:
-- job_queue/notify.sql), and years before 1 or after 9999. Python's datetime, which psycopg
-- reads them into, and google.protobuf.Timestamp stop at 0001-01-01 and 9999-12-31 (UTC: the
-- service's sessions run in UTC, queue_service/pools.py). Read as they are, one such value in
-- a row failed the whole answer that held it: a Claim after the claim had committed (every
-- job of its batch left RUNNING with an attempt spent and no worker), every ListJobs page
-- that held it, a cancel of a parked job.
--
-- So the service never reads a raw job time: the queries of queue_service/sql/queries.sql
-- that answer with job rows read them through these functions, which bring a time outside that
-- range to the nearest end of it ('-infinity' shows as 0001-01-01T00:00:00Z, 'infinity' as
-- 9999-12-31T23:59:59.999999Z). The stored value is unchanged (a claim alone repairs a
-- run_after before the range: job_queue/claim.sql). No CHECK constraint: 'infinity' is a
-- meaningful run_after, and a NOT VALID check would make every later UPDATE of an existing
-- such row (the claim's included) fail its whole statement.
--
-- Safe to re-apply: the functions are replaced.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/013_shown_times.sql

BEGIN;

SET LOCAL lock_timeout = '5s';

-- A time within 0001-01-01..9999-12-31 UTC: itself, or the nearest end of that range; NULL
-- stays NULL. Inlined by the planner (an IMMUTABLE SQL expression).
CREATE OR REPLACE FUNCTION ingestion_job_shown_time(p_time timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_time < timestamptz '0001-01-01 00:00:00+00'
                THEN timestamptz '0001-01-01 00:00:00+00'
                WHEN p_time > timestamptz '9999-12-31 23:59:59.999999+00'
                THEN timestamptz '9999-12-31 23:59:59.999999+00'
                ELSE p_time END
$$;

-- A whole job row with every time through ingestion_job_shown_time: what the pages, GetJob,
-- cancel and retry answer with. Whatever columns the table gains, the row keeps them.
CREATE OR REPLACE FUNCTION ingestion_job_shown(p_job ingestion_jobs)
RETURNS ingestion_jobs
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    p_job.run_after               := ingestion_job_shown_time(p_job.run_after);
    p_job.locked_at               := ingestion_job_shown_time(p_job.locked_at);
    p_job.cancel_requested_at     := ingestion_job_shown_time(p_job.cancel_requested_at);
    p_job.completed_at            := ingestion_job_shown_time(p_job.completed_at);
    p_job.created_at              := ingestion_job_shown_time(p_job.created_at);
    p_job.updated_at              := ingestion_job_shown_time(p_job.updated_at);
    p_job.last_heartbeat_at       := ingestion_job_shown_time(p_job.last_heartbeat_at);
    p_job.processing_started_at   := ingestion_job_shown_time(p_job.processing_started_at);
    p_job.processing_completed_at := ingestion_job_shown_time(p_job.processing_completed_at);
    RETURN p_job;
END
$$;

COMMIT;
