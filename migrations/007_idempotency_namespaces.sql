-- 007: idempotency keys are namespaced by queue, and the caller's apart from the derived ones.
--
-- 003 made idempotency_key unique across the whole table. Two faults followed (issue 11):
--   the same caller key in two queues made one job: the second queue's enqueue answered
--   "already existed" with the first queue's job, which that queue's workers never claim;
--   a caller key equal to the key derived for another input (sha256 of queue and input, which
--   anyone can compute) captured that input: its later enqueues answered with the caller's job.
-- Now a key is unique within its queue (this index), and a caller may not send a key of the
-- derived form, 64 lowercase hex characters (enqueue_jobs in job_queue/enqueue.sql refuses it,
-- and so does the queue service, with INVALID_ARGUMENT): the two kinds can never meet. Existing
-- rows keep their keys and keep working: every derived key is still derived the same way, and
-- a key unique in the table is unique in its queue, so the index below always builds.
--
-- enqueue_jobs resolves a conflict with ON CONFLICT DO NOTHING without naming the index, and
-- looks the existing job up by queue and key: it works with either index, so enqueues keep
-- working while a deploy re-applies 004 and then this file. (Re-applying 003 by hand after this
-- file brings the table-wide index back, and with it the old collisions across queues, which
-- enqueue then reports as UNAVAILABLE; apply this file again.)
--
-- Safe to re-apply: the index is created only when missing, the old one dropped only when
-- there; a re-apply takes no lock on the table.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/007_idempotency_namespaces.sql
--
-- On a large table: CREATE INDEX takes a SHARE lock on ingestion_jobs, which blocks enqueues,
-- claims, heartbeats and settles (reads go on) while it reads the whole table, a few seconds per
-- million rows; DROP INDEX then takes an ACCESS EXCLUSIVE lock for a moment, once every
-- transaction already using the table has ended (lock_timeout below: it fails instead of
-- queueing behind a long one, and blocking everything behind itself). To build without blocking
-- the queue, from a psql prompt first:
--   CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ingestion_jobs_queue_idempotency_key_idx
--       ON ingestion_jobs (queue, idempotency_key);
--   DROP INDEX CONCURRENTLY IF EXISTS ingestion_jobs_idempotency_key_idx;
-- then apply this file, which finds both done and does nothing. A CONCURRENTLY build that fails
-- leaves an INVALID index of that name, which this file would take for done: DROP INDEX it and
-- build again (`\d ingestion_jobs` marks it INVALID).

BEGIN;

-- Never queue behind a long transaction while holding locks the running queue needs: fail the
-- migration instead, and let it be retried.
SET LOCAL lock_timeout = '5s';

-- Each statement runs only when it has work to do: CREATE INDEX IF NOT EXISTS would take its
-- SHARE lock (and wait for the queue's writers) even to find the index there.
DO $$
BEGIN
    IF to_regclass('ingestion_jobs_queue_idempotency_key_idx') IS NULL THEN
        CREATE UNIQUE INDEX ingestion_jobs_queue_idempotency_key_idx
            ON ingestion_jobs (queue, idempotency_key);
    END IF;
    IF to_regclass('ingestion_jobs_idempotency_key_idx') IS NOT NULL THEN
        DROP INDEX ingestion_jobs_idempotency_key_idx;
    END IF;
END
$$;

COMMIT;
