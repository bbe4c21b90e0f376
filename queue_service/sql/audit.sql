-- The queries of the audit trail of admin actions (queue_service/audit.py), by name. The table
-- is migrations/012_security.sql's admin_audit; rows are inserted, and deleted only by retention
-- (prune_audit in queries.sql). An enqueue's entries are written by the enqueue's own statement
-- (queries.sql, enqueue).

-- name: record
-- The entries that arrived together, in one statement, from a JSON array of
-- {action, job_id, role, credential, operator, outcome}. Each row takes the database clock
-- when the statement runs, just after its action.
INSERT INTO admin_audit (action, job_id, role, credential, operator, outcome)
SELECT e.action, e.job_id, e.role, e.credential, e.operator, e.outcome
FROM jsonb_to_recordset(%(entries)s)
     AS e(action text, job_id uuid, role text, credential text, operator text, outcome text);

-- name: trail
-- What was done to one job, oldest first (admin_audit_job_idx).
SELECT at, action, role, credential, operator, outcome
FROM admin_audit
WHERE job_id = %(job_id)s
ORDER BY at, id;
