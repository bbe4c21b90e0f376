-- 005: the adverts that the ingestion pipeline stores, and their searchable chunks.
--
-- Workers never touch the database: they send a finished advert to the queue service's
-- AdvertService, which writes it here in one transaction (queue_service/advert_store.py).
-- Safe to re-apply: every object is created only when missing.
--
--   psql -v ON_ERROR_STOP=1 -f migrations/005_adverts.sql

BEGIN;

CREATE TABLE IF NOT EXISTS adverts (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Where the video came from ("s3:videos/x.mp4", "local:/media/x.mp4"). Unique: ingesting
    -- the same source again (a retried job, a re-enqueue) replaces the record and keeps its id.
    source_key  text        NOT NULL,
    -- The job that stored it last. Deliberately no foreign key to ingestion_jobs: finished
    -- jobs are deleted by cleanup, and their adverts must outlive them.
    job_id      uuid,
    -- ffprobe facts: duration_seconds, width, height, fps, codecs, ...
    media       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Empty when there was no speech or no transcription provider; provenance says which.
    transcript  text        NOT NULL DEFAULT '',
    -- The LLM's structured analysis (brand, product, claims, ...); {} when it was skipped.
    analysis    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- [{timestamp_seconds, uri, width, height}], in time order.
    keyframes   jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- Providers used per stage, stages skipped and why.
    provenance  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'adverts_shape_check') THEN
        ALTER TABLE adverts ADD CONSTRAINT adverts_shape_check
            CHECK (source_key <> ''
                   AND jsonb_typeof(media) = 'object'
                   AND jsonb_typeof(analysis) = 'object'
                   AND jsonb_typeof(keyframes) = 'array'
                   AND jsonb_typeof(provenance) = 'object');
    END IF;
END
$$;

-- The idempotency key of a store: the upsert's ON CONFLICT target.
CREATE UNIQUE INDEX IF NOT EXISTS adverts_source_key_idx ON adverts (source_key);
-- "What did this job store?" for operators following a job's output.
CREATE INDEX IF NOT EXISTS adverts_job_id_idx ON adverts (job_id);

-- One row per searchable text of an advert. Re-storing an advert replaces all of its chunks
-- (a new transcript may split differently), so they carry no identity of their own beyond
-- (advert, position).
CREATE TABLE IF NOT EXISTS advert_chunks (
    advert_id       uuid    NOT NULL REFERENCES adverts (id) ON DELETE CASCADE,
    chunk_index     integer NOT NULL,
    -- transcript, analysis, media.
    kind            text    NOT NULL,
    text            text    NOT NULL,
    -- The vector and the model that made it. real[] because this PostgreSQL has no pgvector;
    -- search ranks in the application or moves to a vector column once pgvector is available.
    -- NULL when no embedding provider was available: never a placeholder vector.
    embedding       real[],
    embedding_model text,
    PRIMARY KEY (advert_id, chunk_index)
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'advert_chunks_embedding_check') THEN
        -- A vector always says which model made it (vectors of different models do not
        -- compare), and is one-dimensional and non-empty.
        ALTER TABLE advert_chunks ADD CONSTRAINT advert_chunks_embedding_check
            CHECK ((embedding IS NULL AND embedding_model IS NULL)
                   OR (array_ndims(embedding) = 1
                       AND cardinality(embedding) > 0
                       AND coalesce(embedding_model, '') <> ''));
    END IF;
END
$$;

COMMIT;
