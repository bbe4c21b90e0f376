"""Stage 9, persist: keep the keyframe images, then store the advert through the queue service.

Keyframe images of an S3 source go to the same bucket under KEYFRAME_PREFIX/<hash of the
source>/NNNN.jpg, so re-ingesting a video overwrites its own frames instead of piling up new
ones. For a local source they are copied to KEYFRAME_DIR/<hash>/ when that is set; otherwise
only their times and sizes are stored (uri empty) and provenance says so, because the job's
workdir is deleted when the job ends and a path into it would be a lie.

The advert is stored idempotently by source_key, and only while this job's lease is current,
through the AdvertSink the pipeline factory gave this stage.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from typing import Any

from jobqueue.v1 import advert_service_pb2
from worker_service.pipeline import provenance
from worker_service.pipeline.base import StageContext
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.keyframes import KeyframeFile
from worker_service.pipeline.sources import Source
from worker_service.providers.interfaces import AdvertSink, ObjectStore

log = logging.getLogger(__name__)


def _summary(ctx: StageContext, keyframes: int, ad_id: str) -> str:
    facts = ctx.state["media"]
    prov = provenance.provenance(ctx)
    parts = [
        f"{facts['duration_seconds']:.1f} s {facts['width']}x{facts['height']} "
        f"{facts.get('video_codec') or '?'}/{facts.get('audio_codec') or 'no audio'}",
        f"{keyframes} keyframes",
    ]
    transcript = ctx.state.get("transcript")
    if transcript is not None:
        parts.append(f"transcript {len(transcript.text)} chars")
    analysis = ctx.state.get("analysis")
    if analysis and analysis.get("brand"):
        parts.append(f"brand {analysis['brand']}")
    chunks = len(ctx.state.get("chunks") or [])
    if ctx.state.get("embeddings"):
        parts.append(f"{chunks} chunks embedded with {ctx.state['embedding_model']}")
    else:
        parts.append(f"{chunks} chunks, not embedded")
    if prov["skipped"]:
        parts.append("skipped: " + ", ".join(sorted(prov["skipped"])))
    return f"advert {ad_id}: " + "; ".join(parts)


class Persist:
    name = "persist"

    def __init__(self, config: PipelineConfig, store: ObjectStore | None, sink: AdvertSink) -> None:
        self._config = config
        self._store = store
        self._sink = sink

    def _keep_keyframes(
        self, ctx: StageContext, source: Source, frames: list[KeyframeFile]
    ) -> list[str]:
        """Store the images; return their URIs in order ("" where none is kept)."""
        digest = hashlib.sha256(source.source_key.encode()).hexdigest()[:16]
        uris: list[str] = []
        if source.kind == "s3" and self._store is not None:
            for i, frame in enumerate(frames, start=1):
                key = f"{self._config.keyframe_prefix}{digest}/{i:04d}.jpg"
                uris.append(self._store.upload(frame.path, key, "image/jpeg"))
                # Uploads are the slow part of this stage: 0..0.8 of it.
                ctx.progress(0.8 * i / len(frames))
            provenance.note(
                ctx,
                "keyframe_storage",
                f"s3://{self._store.bucket}/{self._config.keyframe_prefix}{digest}/",
            )
            return uris
        if self._config.keyframe_dir is not None:
            folder = self._config.keyframe_dir / digest
            folder.mkdir(parents=True, exist_ok=True)
            for i, frame in enumerate(frames, start=1):
                dest = folder / f"{i:04d}.jpg"
                shutil.copyfile(frame.path, dest)
                uris.append(str(dest))
            provenance.note(ctx, "keyframe_storage", str(folder))
            return uris
        provenance.note(
            ctx, "keyframe_storage", "images not kept: local source and KEYFRAME_DIR is not set"
        )
        return ["" for _ in frames]

    def run(self, ctx: StageContext) -> None:
        source: Source = ctx.state["source"]
        frames: list[KeyframeFile] = ctx.state.get("keyframes") or []
        uris = self._keep_keyframes(ctx, source, frames)
        ctx.check_stopped()

        transcript = ctx.state.get("transcript")
        provenance.used(ctx, self.name, "queue_service:AdvertService.StoreAdvert")
        prov = provenance.provenance(ctx)
        if transcript is not None and transcript.language:
            prov["notes"]["transcript_language"] = transcript.language
        advert = advert_service_pb2.Advert(
            source_key=source.source_key,
            job_id=ctx.job_id,
            transcript=transcript.text if transcript is not None else "",
        )
        advert.media.update(ctx.state["media"])
        advert.analysis.update(ctx.state.get("analysis") or {})
        advert.provenance.update(prov)
        for frame, uri in zip(frames, uris, strict=True):
            advert.keyframes.add(
                timestamp_seconds=frame.timestamp_seconds,
                uri=uri,
                width=frame.width,
                height=frame.height,
            )
        vectors: list[list[float]] | None = ctx.state.get("embeddings")
        model = ctx.state.get("embedding_model") or ""
        for i, chunk in enumerate(ctx.state.get("chunks") or []):
            advert.chunks.add(
                index=chunk.index,
                kind=chunk.kind,
                text=chunk.text,
                embedding=vectors[i] if vectors else [],
                embedding_model=model if vectors else "",
            )
        ctx.progress(0.85)

        ad_id, created = self._sink.store(advert, ctx.job_id, ctx.lease)
        log.info("job %s: stored advert %s (created=%s)", ctx.job_id, ad_id, created)

        facts = ctx.state["media"]
        output: dict[str, Any] = {
            "ad_id": ad_id,
            "created": created,
            "source_key": source.source_key,
            "summary": _summary(ctx, len(frames), ad_id),
            "media": {
                key: facts[key]
                for key in (
                    "duration_seconds",
                    "width",
                    "height",
                    "fps",
                    "video_codec",
                    "audio_codec",
                )
            },
            "transcript_chars": len(advert.transcript),
            "keyframes": len(frames),
            "chunks": len(advert.chunks),
            "embedding_model": model or None,
            "embedding_dimension": len(vectors[0]) if vectors else 0,
            "providers": dict(prov["providers"]),
            "skipped": dict(prov["skipped"]),
        }
        ctx.output.update(output)
        ctx.progress(1.0)
