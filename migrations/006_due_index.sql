-- 006: when the next job of a queue comes due, in one index descent.
--
-- 003's claim index orders runnable jobs by priority first, so "is anything due?" walks every
-- job that waits in backoff or is scheduled for later before it can answer no: a claim that
-- finds nothing got slower with every such job (100k of them cost ~10 ms a claim). This index
-- answers it, and "when does the next one come due?", from its first entry for the queue:
--   claim_jobs (job_queue/claim.sql) asks it before it scans for jobs to claim, so an empty
--   claim costs the same at any depth;
--   the queue service asks it when a queue's due timer fires (next_due in
--   queue_service/sql/queries.sql), so a waiting claim is woken when a backoff runs out
--   without polling for it.
-- Partial, like 003's claim index: only QUEUED and RETRY jobs are in it, so finished jobs (the
-- bulk of the table over time) cost it nothing, and a claim removes its job from it.
--
-- Safe to re-apply: the index is created only when missing.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/006_due_index.sql
--
-- On a large table: CREATE INDEX blocks inserts and updates of ingestion_jobs while it reads
-- the whole table (a few seconds per million rows), and CONCURRENTLY cannot run inside this
-- file's transaction. Build it first, without blocking the queue, from a psql prompt:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS ingestion_jobs_due_idx
--       ON ingestion_jobs (queue, run_after) WHERE status IN ('QUEUED', 'RETRY');
-- then apply this file, which finds the index and does nothing. A CONCURRENTLY build that fails
-- leaves an INVALID index of that name, which this file would take for done: DROP INDEX it and
-- build again (`\d ingestion_jobs` marks it INVALID).

BEGIN;

-- Never queue behind a long transaction while holding locks the running queue needs: fail the
-- migration instead, and let it be retried.
SET LOCAL lock_timeout = '5s';

CREATE INDEX IF NOT EXISTS ingestion_jobs_due_idx
    ON ingestion_jobs (queue, run_after)
    WHERE status IN ('QUEUED', 'RETRY');

COMMIT;
