-- The queries of the AdvertService (queue_service/advert_store.py), by name. The store runs
-- lease_check, upsert_advert, delete_chunks and insert_chunks in one transaction, so a stored
-- advert is either entirely the new one or entirely the old one, and never written by a worker
-- that no longer holds its job's lease.

-- name: lease_check
-- FOR SHARE holds the job row until the transaction ends: a concurrent release, re-claim or
-- cancel (all UPDATEs of this row) waits for the advert to be written, or the advert waits for
-- them and then sees the new lease. Either way no advert lands under a lease that is gone.
SELECT status, lease
FROM ingestion_jobs
WHERE id = %(job_id)s
FOR SHARE;

-- name: upsert_advert
-- Keyed by source_key: a re-ingested source replaces its record and keeps its id, but only
-- (migrations/012) when the writer is the job that stored it, under the same or a later lease,
-- or another job once the one that stored it no longer runs. No row comes back otherwise: the
-- store answers FAILED_PRECONDITION (ADVERT_HELD) and nothing changed.
-- xmax = 0 on the returned row means it was inserted rather than updated (an updated row
-- version carries the updating transaction's id in xmax).
INSERT INTO adverts AS a
    (source_key, job_id, lease, media, transcript, analysis, keyframes, provenance)
VALUES
    (%(source_key)s, %(job_id)s, %(lease)s, %(media)s, %(transcript)s, %(analysis)s,
     %(keyframes)s, %(provenance)s)
ON CONFLICT (source_key) DO UPDATE
SET job_id     = EXCLUDED.job_id,
    lease      = EXCLUDED.lease,
    media      = EXCLUDED.media,
    transcript = EXCLUDED.transcript,
    analysis   = EXCLUDED.analysis,
    keyframes  = EXCLUDED.keyframes,
    provenance = EXCLUDED.provenance,
    updated_at = now()
WHERE a.job_id IS NULL
   OR (a.job_id = EXCLUDED.job_id AND coalesce(a.lease, 0) <= EXCLUDED.lease)
   OR (a.job_id <> EXCLUDED.job_id
       AND NOT EXISTS (SELECT 1 FROM ingestion_jobs j
                       WHERE j.id = a.job_id AND j.status = 'RUNNING'))
RETURNING a.id, (a.xmax = 0) AS created;

-- name: advert_holder
-- Why an upsert was refused: the job that holds the advert, and its status.
SELECT a.job_id, coalesce(j.status, 'GONE') AS status
FROM adverts a LEFT JOIN ingestion_jobs j ON j.id = a.job_id
WHERE a.source_key = %(source_key)s;

-- name: delete_chunks
DELETE FROM advert_chunks WHERE advert_id = %(advert_id)s;

-- name: insert_chunks
-- All chunks in one statement, from a JSON array of
-- {chunk_index, kind, text, embedding: [float, ...], embedding_model}. An empty embedding is
-- stored as NULL (no vector), never as an empty or zero vector.
INSERT INTO advert_chunks (advert_id, chunk_index, kind, text, embedding, embedding_model)
SELECT %(advert_id)s,
       c.chunk_index,
       c.kind,
       c.text,
       CASE WHEN jsonb_array_length(c.embedding) > 0 THEN
           ARRAY(SELECT e.value::text::real
                 FROM jsonb_array_elements(c.embedding) WITH ORDINALITY AS e(value, ord)
                 ORDER BY e.ord)
       END,
       CASE WHEN jsonb_array_length(c.embedding) > 0 THEN nullif(c.embedding_model, '') END
FROM jsonb_to_recordset(%(chunks)s::jsonb)
     AS c(chunk_index integer, kind text, text text, embedding jsonb, embedding_model text);

-- name: get_advert
-- The advert and its chunks in one statement, so both come from the same snapshot even while
-- the advert is being re-stored.
SELECT a.id, a.source_key, a.job_id, a.media, a.transcript, a.analysis, a.keyframes,
       a.provenance, a.created_at, a.updated_at,
       coalesce(
           (SELECT jsonb_agg(jsonb_build_object(
                       'index', c.chunk_index,
                       'kind', c.kind,
                       'text', c.text,
                       'embedding', coalesce(to_jsonb(c.embedding), '[]'::jsonb),
                       'embedding_model', coalesce(c.embedding_model, ''))
                   ORDER BY c.chunk_index)
            FROM advert_chunks c
            WHERE c.advert_id = a.id),
           '[]'::jsonb) AS chunks
FROM adverts a
WHERE a.id = %(advert_id)s;
