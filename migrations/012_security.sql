-- 012: least privilege in the schema: the lease an advert was stored under, and the audit trail
-- of admin actions.
--
-- Adverts. StoreAdvert now always names a job and its lease (queue_service/adverts.py refuses
-- anything else). The lease it was stored under is kept beside job_id, so that an advert can be
-- replaced only by its own job under the same or a later lease, or by another job of the same
-- source once the job that stored it no longer runs (sql/adverts.sql, upsert_advert): a worker
-- of one job can no longer wipe the advert that a running job is writing. NULL for adverts
-- stored before this migration, which any current lease may replace.
--
-- Audit. Every admin action (enqueue, cancel, retry, release-stale) is recorded with when, who
-- (the role the credential proved, the credential's name, and the operator a trusted gateway
-- named), which job and the outcome, whether it succeeded or was refused by the job's state.
-- Deliberately no foreign key to ingestion_jobs: cleanup deletes finished jobs, and what was
-- done to them must outlive them. Rows are only ever inserted (queue_service/audit.py).
--
-- Safe to re-apply: every object is created only when missing.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/012_security.sql

BEGIN;

SET LOCAL lock_timeout = '5s';

ALTER TABLE adverts ADD COLUMN IF NOT EXISTS lease bigint;

CREATE TABLE IF NOT EXISTS admin_audit (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- enqueue, cancel, retry, release_stale.
    action      text        NOT NULL,
    -- NULL for an action that touched no job (a release-stale sweep that found nothing, an
    -- enqueue refused before it had an id).
    job_id      uuid,
    -- worker, admin, admin+worker (QUEUE_AUTH_TOKEN), or admin+worker for "anonymous" when the
    -- queue service runs without credentials.
    role        text        NOT NULL,
    -- How the caller proved the role: QUEUE_ADMIN_TOKEN, QUEUE_AUTH_TOKEN, cert:<name>,
    -- anonymous. The name of the credential, never its value.
    credential  text        NOT NULL,
    -- Who a trusted client says is behind the call (the gateway: "gateway <client address>"),
    -- '' when none was named.
    operator    text        NOT NULL DEFAULT '',
    -- ok, already_existed, released:<reason>, or the refusal's status code and reason
    -- (FAILED_PRECONDITION:INVALID_TRANSITION, NOT_FOUND:JOB_NOT_FOUND, ...).
    outcome     text        NOT NULL,
    CONSTRAINT admin_audit_action_check
        CHECK (action IN ('enqueue', 'cancel', 'retry', 'release_stale'))
);

-- "What was done to this job, and by whom?" (GetJob's audit_trail, the REST job view).
CREATE INDEX IF NOT EXISTS admin_audit_job_idx ON admin_audit (job_id, at);

COMMIT;
