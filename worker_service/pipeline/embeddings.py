"""Stage 8, embeddings: one vector per chunk, in batches, reporting progress per batch.

Skipped, and said so, when no embedding provider is available: chunks are then stored without
vectors (never with placeholder ones) and can be embedded later.
"""

from __future__ import annotations

from worker_service.pipeline import provenance
from worker_service.pipeline.base import StageContext
from worker_service.pipeline.errors import TransientError
from worker_service.providers.interfaces import Embedder

BATCH_SIZE = 64


class Embeddings:
    name = "embeddings"

    def __init__(self, embedder: Embedder | None, unavailable_reason: str) -> None:
        self._embedder = embedder
        self._unavailable_reason = unavailable_reason

    def run(self, ctx: StageContext) -> None:
        ctx.state["embeddings"] = None
        ctx.state["embedding_model"] = None
        chunks = ctx.state.get("chunks") or []
        if self._embedder is None:
            provenance.skipped(ctx, self.name, self._unavailable_reason)
            return
        if not chunks:
            provenance.skipped(ctx, self.name, "no text to embed")
            return
        vectors: list[list[float]] = []
        for start in range(0, len(chunks), BATCH_SIZE):
            batch = chunks[start : start + BATCH_SIZE]
            vectors += self._embedder.embed([chunk.text for chunk in batch])
            ctx.progress(len(vectors) / len(chunks))
        if len(vectors) != len(chunks) or len({len(v) for v in vectors}) != 1:
            raise TransientError("EMBEDDING_INVALID_OUTPUT", "embeddings do not match the chunks")
        ctx.state["embeddings"] = vectors
        ctx.state["embedding_model"] = self._embedder.model
        provenance.used(ctx, self.name, self._embedder.name)
