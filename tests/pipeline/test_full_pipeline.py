"""All nine stages on a generated advert, as the worker runs them: once offline (local
providers only) and once with every OpenAI path through the local OpenAI-compatible server."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from tests.pipeline.conftest import RecordingSink, make_context
from tests.pipeline.sample_media import SampleAdvert
from tests.support.fake_openai import API_KEY, EMBEDDING_DIMENSION, TRANSCRIPT, FakeOpenAI
from worker_service.pipeline.base import Pipeline, StageContext
from worker_service.pipeline.factory import STAGE_NAMES, build_pipeline
from worker_service.providers import local_embeddings

pytestmark = pytest.mark.integration

needs_local_model = pytest.mark.skipif(
    not local_embeddings.available(), reason="the local-embeddings extra is not installed"
)


def run_pipeline(pipeline: Pipeline, ctx: StageContext, reports: list[float]) -> list[str]:
    """Check the input and run the stages as the worker does; return the stages that reported
    progress."""
    pipeline.check_input(ctx.input)
    reporting: list[str] = []
    for stage in pipeline.stages:
        before = len(reports)
        stage.run(ctx)
        if len(reports) > before:
            reporting.append(stage.name)
        ctx.check_stopped()
    return reporting


def _unit(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def _check_common(advert: Any, sample: SampleAdvert, source_key: str) -> None:
    assert advert.source_key == source_key
    media = dict(advert.media)
    assert media["width"] == sample.width
    assert media["height"] == sample.height
    assert media["fps"] == sample.fps
    assert media["duration_seconds"] == pytest.approx(sample.duration, abs=0.2)
    assert [k.timestamp_seconds for k in advert.keyframes] == pytest.approx(
        sample.scene_starts, abs=0.1
    )
    assert all((k.width, k.height) == (sample.width, sample.height) for k in advert.keyframes)
    assert advert.chunks, "at least the media chunk"


@needs_local_model
def test_offline_run_from_s3(
    s3: Any,
    bucket: str,
    sample: SampleAdvert,
    sink: RecordingSink,
    no_openai: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3.upload_file(str(sample.path), bucket, "videos/test-ad.mp4")
    monkeypatch.setenv("S3_BUCKET", bucket)
    pipeline = build_pipeline(advert_sink=sink)
    assert tuple(pipeline.names) == STAGE_NAMES
    assert len(pipeline) == 9

    ctx, reports = make_context(
        tmp_path / "work", {"source_type": "s3", "s3_key": "videos/test-ad.mp4"}, lease=3
    )
    reporting = run_pipeline(pipeline, ctx, reports)
    assert {"fetch_video", "extract_audio", "keyframes", "embeddings", "persist"} <= set(reporting)

    ((advert, job_id, lease),) = sink.calls
    assert (job_id, lease) == (ctx.job_id, 3)
    _check_common(advert, sample, "s3:videos/test-ad.mp4")
    # Nothing invented: no transcript, no analysis, and provenance says why.
    assert advert.transcript == ""
    assert dict(advert.analysis) == {}
    skipped = json_format.MessageToDict(advert.provenance)["skipped"]
    assert "OPENAI_API_KEY is not set" in skipped["transcription"]
    assert "OPENAI_API_KEY is not set" in skipped["llm_analysis"]
    assert "embeddings" not in skipped
    # The media chunk is embedded by the local model, at its dimension, normalised.
    (chunk,) = advert.chunks
    assert chunk.kind == "media"
    assert "8.0 seconds" in chunk.text and "320x240" in chunk.text
    assert chunk.embedding_model == local_embeddings.MODEL_NAME
    assert len(chunk.embedding) == local_embeddings.DIMENSION
    assert _unit(list(chunk.embedding)) == pytest.approx(1.0, abs=1e-3)
    # Keyframe images went to the bucket, under a prefix derived from the source.
    for frame in advert.keyframes:
        assert frame.uri.startswith(f"s3://{bucket}/keyframes/")
        key = frame.uri.removeprefix(f"s3://{bucket}/")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body[:2] == b"\xff\xd8"

    out = ctx.output
    assert out["ad_id"] and out["created"] is True
    assert out["keyframes"] == len(sample.scene_starts)
    assert out["embedding_dimension"] == local_embeddings.DIMENSION
    assert out["skipped"].keys() == {"transcription", "llm_analysis"}
    assert out["summary"].startswith(f"advert {out['ad_id']}: 8.0 s 320x240 h264/aac")


def test_openai_run_uses_every_openai_path(
    s3: Any,
    bucket: str,
    sample: SampleAdvert,
    sink: RecordingSink,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3.upload_file(str(sample.path), bucket, "videos/test-ad.mp4")
    pipeline = build_pipeline(
        {
            "S3_BUCKET": bucket,
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_MAX_RETRIES": "1",
            "CHUNK_WORDS": "10",
            "CHUNK_OVERLAP_WORDS": "2",
        },
        advert_sink=sink,
    )
    ctx, reports = make_context(
        tmp_path / "work", {"source_type": "s3", "s3_key": "videos/test-ad.mp4"}
    )
    run_pipeline(pipeline, ctx, reports)

    assert fake_openai.paths() == [
        "/v1/audio/transcriptions",
        "/v1/chat/completions",
        "/v1/embeddings",
    ]
    transcription, chat, embeddings = fake_openai.requests
    # The audio sent is the extracted 16 kHz mono WAV.
    assert transcription.form["file"]["bytes"][:4] == b"RIFF"
    user_parts = chat.json["messages"][1]["content"]
    assert TRANSCRIPT in user_parts[0]["text"]
    assert sum(p["type"] == "image_url" for p in user_parts) == 4  # the four scenes

    ((advert, _, _),) = sink.calls
    _check_common(advert, sample, "s3:videos/test-ad.mp4")
    assert advert.transcript == TRANSCRIPT
    assert advert.analysis["brand"] == "Sparkle Cola"
    kinds = [c.kind for c in advert.chunks]
    # 12 words in windows of 10 with overlap 2: two transcript chunks.
    assert kinds == ["transcript", "transcript", "analysis", "media"]
    assert embeddings.json["input"] == [c.text for c in advert.chunks]
    for chunk in advert.chunks:
        assert chunk.embedding_model == "text-embedding-3-small"
        assert len(chunk.embedding) == EMBEDDING_DIMENSION
    provenance = json_format.MessageToDict(advert.provenance)
    providers = provenance["providers"]
    assert providers["transcription"] == "openai:whisper-1"
    assert providers["llm_analysis"] == "openai:gpt-4o-mini"
    assert providers["embeddings"] == "openai:text-embedding-3-small"
    assert provenance["skipped"] == {}
    assert ctx.output["embedding_dimension"] == EMBEDDING_DIMENSION
    assert "brand Sparkle Cola" in ctx.output["summary"]


def test_openai_outage_in_a_stage_is_transient_for_the_job(
    sample: SampleAdvert,
    sink: RecordingSink,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    from worker_service.pipeline.errors import TransientError

    fake_openai.fail("/v1/audio/transcriptions", 500, 500)
    pipeline = build_pipeline(
        {"OPENAI_API_KEY": API_KEY, "OPENAI_MAX_RETRIES": "1", "EMBEDDING_PROVIDER": "none"},
        advert_sink=sink,
    )
    ctx, reports = make_context(
        tmp_path / "work", {"source_type": "local", "path": str(sample.path)}
    )
    with pytest.raises(TransientError) as raised:
        run_pipeline(pipeline, ctx, reports)
    assert raised.value.code == "OPENAI_UNAVAILABLE"
    assert "transcription" in fake_openai.paths()[0]
    assert sink.calls == [], "nothing is persisted from a failed attempt"


def test_local_source_keeps_keyframes_in_keyframe_dir(
    sample: SampleAdvert, sink: RecordingSink, no_openai: None, tmp_path: Path
) -> None:
    keep = tmp_path / "frames"
    pipeline = build_pipeline(
        {"KEYFRAME_DIR": str(keep), "EMBEDDING_PROVIDER": "none"}, advert_sink=sink
    )
    job_input = {"source_type": "local", "path": str(sample.path)}
    ctx, reports = make_context(tmp_path / "work", job_input)
    run_pipeline(pipeline, ctx, reports)

    ((advert, _, _),) = sink.calls
    _check_common(advert, sample, f"local:{sample.path.resolve()}")
    for frame in advert.keyframes:
        assert Path(frame.uri).parent.parent == keep
        assert Path(frame.uri).read_bytes()[:2] == b"\xff\xd8"
    # Stored without vectors, never with placeholders, and the reason is recorded.
    assert all(len(c.embedding) == 0 and c.embedding_model == "" for c in advert.chunks)
    assert json_format.MessageToDict(advert.provenance)["skipped"]["embeddings"] == (
        "no embedding provider: EMBEDDING_PROVIDER=none"
    )

    # The same source again updates the same advert.
    ctx2, reports2 = make_context(tmp_path / "work2", job_input)
    run_pipeline(pipeline, ctx2, reports2)
    assert ctx2.output["ad_id"] == ctx.output["ad_id"]
    assert ctx2.output["created"] is False


def test_local_source_without_keyframe_dir_keeps_only_times(
    sample: SampleAdvert, sink: RecordingSink, no_openai: None, tmp_path: Path
) -> None:
    pipeline = build_pipeline({"EMBEDDING_PROVIDER": "none"}, advert_sink=sink)
    ctx, reports = make_context(
        tmp_path / "work", {"source_type": "local", "path": str(sample.path)}
    )
    run_pipeline(pipeline, ctx, reports)
    ((advert, _, _),) = sink.calls
    assert [k.uri for k in advert.keyframes] == [""] * len(sample.scene_starts)
    notes = json_format.MessageToDict(advert.provenance)["notes"]
    assert "KEYFRAME_DIR is not set" in notes["keyframe_storage"]


def test_build_pipeline_refuses_impossible_configuration(no_openai: None) -> None:
    with pytest.raises(ValueError, match="EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY"):
        build_pipeline({"EMBEDDING_PROVIDER": "openai"}, advert_sink=RecordingSink())
