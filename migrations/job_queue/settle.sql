-- job_queue/settle.sql, included by 004: what complete_job, fail_job and release_job share.

-- ---------------------------------------------------------------------------------------------
-- settle_outcomes: the answer of a settle of RUNNING jobs (complete, fail, release), one row per
-- entry of the call, in input order:
--   'ok'          the entry's UPDATE matched (id, lease, RUNNING); with the settled row
--   'lease_lost'  the job exists but was not RUNNING under this lease: nothing changed; with the
--                 row as it is now
--   'not_found'   no such job; with NULL
-- p_settled holds the rows that the caller's UPDATE returned: an entry is settled exactly when
-- its (id, lease) is among them. A job already in p_repeat_status under the entry's lease was
-- settled by this same caller before (only the lease's owner can settle under it): complete_job
-- passes 'SUCCEEDED', so a repeated Complete, after an answer lost in transit, is 'ok' too.
-- Settled jobs that are runnable at once (QUEUED after a release, or RETRY with no delay) wake
-- the claims waiting on their queue. p_now is the caller's clock, read once per call.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION settle_outcomes(
    p_job_ids       uuid[],
    p_leases        bigint[],
    p_settled       ingestion_jobs[],
    p_now           timestamptz,
    p_repeat_status text DEFAULT NULL
)
RETURNS TABLE (job_id uuid, outcome text, status text, job ingestion_jobs)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
BEGIN
    PERFORM notify_queue(ARRAY(
        SELECT s.queue FROM unnest(p_settled) s
        WHERE s.status IN ('QUEUED', 'RETRY') AND s.run_after <= p_now));

    RETURN QUERY
    SELECT r.id,
           CASE WHEN s.id IS NOT NULL THEN 'ok'
                WHEN cur.id IS NULL THEN 'not_found'
                WHEN cur.status = p_repeat_status AND cur.lease = r.lease THEN 'ok'
                ELSE 'lease_lost' END,
           coalesce(s.status, cur.status),
           CASE WHEN s.id IS NOT NULL THEN s WHEN cur.id IS NOT NULL THEN cur END
    FROM unnest(p_job_ids, p_leases) WITH ORDINALITY AS r(id, lease, ord)
    LEFT JOIN unnest(p_settled) s ON s.id = r.id AND s.lease = r.lease
    LEFT JOIN ingestion_jobs cur ON cur.id = r.id
    ORDER BY r.ord;
END
$$;
