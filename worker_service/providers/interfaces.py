"""The small interfaces that pipeline stages depend on, and the values they exchange.

Every provider raises `TransientError` / `PermanentError` (from worker_service.pipeline.errors,
the only module of the pipeline a provider imports) for failures it can classify, so that stages
never inspect a vendor's exception types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jobqueue.v1 import advert_service_pb2

# Called with 0..1; may raise JobStopped (it is the stage's ctx.progress).
ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int


class ObjectStore(Protocol):
    """Where source videos come from and where keyframe images go (S3 or compatible)."""

    bucket: str

    def download(self, key: str, dest: Path, progress: ProgressCallback) -> ObjectInfo: ...

    def upload(self, path: Path, key: str, content_type: str) -> str:
        """Upload and return the object's URI (s3://bucket/key)."""
        ...


@dataclass(frozen=True)
class TranscriptSegment:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None = None
    segments: Sequence[TranscriptSegment] = field(default_factory=tuple)


class Transcriber(Protocol):
    # Recorded in provenance, e.g. "openai:whisper-1".
    name: str

    def transcribe(self, audio: Path) -> Transcript: ...


@dataclass(frozen=True)
class AnalysisRequest:
    transcript: str
    media: dict[str, Any]
    # JPEG files, in time order, for providers that can look at pictures.
    keyframes: Sequence[Path]


class Analyzer(Protocol):
    name: str

    def analyse(self, request: AnalysisRequest) -> dict[str, Any]:
        """Return the advert's structured analysis (see analysis_schema.ANALYSIS_SCHEMA)."""
        ...


class Embedder(Protocol):
    name: str
    # The model recorded with every vector, e.g. "text-embedding-3-small".
    model: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order, all of the model's dimension."""
        ...


class AdvertSink(Protocol):
    """Stores an advert through the queue service (which owns the database)."""

    def store(self, advert: advert_service_pb2.Advert, job_id: str, lease: int) -> tuple[str, bool]:
        """Return (ad_id, created). Raises StageError on failure, JobStopped for a lost lease."""
        ...
