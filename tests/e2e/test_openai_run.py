"""The checklist's Test 2 with OpenAI configured: a real worker process runs the real pipeline on
the sample advert from the local S3 store, with every OpenAI path (transcription, structured
analysis, embeddings) answered by a local server that speaks OpenAI's API, reached through the
real `openai` client."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Stack
from tests.support.fake_openai import API_KEY, EMBEDDING_DIMENSION, FakeOpenAI
from tests.support.processes import lines_in_order

pytestmark = pytest.mark.e2e


def test_a_worker_uses_every_openai_path_when_a_key_is_set(
    stack: Stack, fake_openai: FakeOpenAI
) -> None:
    answer = stack.shell(
        """curl -X POST http://localhost:3000/api/ingest/enqueue \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{"source_type": "s3", "s3_key": "videos/test-ad.mp4"}'"""
    )
    job_id = json.loads(answer)["job_id"]

    worker = stack.worker(
        "--once",
        "--limit",
        "1",
        name="openai-worker",
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=fake_openai.base_url,
    )
    assert worker.wait(timeout=180) == 0, worker.output
    lines_in_order(worker, [r"Processing job .*", r"Job \w+ succeeded in .*", r"Jobs succeeded: 1"])
    assert API_KEY not in worker.output

    [job] = stack.query(
        f"SELECT status, output::text AS output FROM ingestion_jobs WHERE id = '{job_id}'"
    )
    assert job["status"] == "SUCCEEDED", job
    output = json.loads(job["output"])
    providers = output["providers"]
    for stage in ("transcription", "llm_analysis", "embeddings"):
        assert providers[stage].startswith("openai:"), providers
    assert not output.get("skipped"), output["skipped"]
    assert output["embedding_dimension"] == EMBEDDING_DIMENSION

    # Each OpenAI endpoint was really called (the local server answers 401 to any key but
    # API_KEY, so the worker also sent the key as its bearer token).
    paths = fake_openai.paths()
    for path in ("/v1/audio/transcriptions", "/v1/chat/completions", "/v1/embeddings"):
        assert path in paths, paths

    # What was stored: the transcript and the structured analysis the model gave, and chunks
    # embedded at the model's dimension.
    [advert] = stack.query(
        "SELECT transcript, analysis->>'brand' AS brand, "
        "(SELECT count(*) FROM advert_chunks c WHERE c.advert_id = a.id) AS chunks, "
        "(SELECT min(array_length(embedding, 1)) FROM advert_chunks c WHERE c.advert_id = a.id) "
        "AS dimension "
        f"FROM adverts a WHERE id = '{output['ad_id']}'"
    )
    assert advert["transcript"], advert
    assert advert["brand"] == "Sparkle Cola"
    assert int(advert["chunks"]) >= 2
    assert int(advert["dimension"]) == EMBEDDING_DIMENSION
