"""Stage 7, chunking: the texts that get embedded and searched.

Three kinds, each from real data only: "transcript" (overlapping word windows, so a phrase
cut at a boundary is still whole in one chunk), "analysis" (the LLM's description rendered as
prose), and "media" (the probed facts as a sentence, so that a search like "30 second advert
with no speech" can match even a record made offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker_service.pipeline import provenance
from worker_service.pipeline.base import StageContext
from worker_service.pipeline.config import PipelineConfig


@dataclass(frozen=True)
class TextChunk:
    index: int
    kind: str
    text: str


def word_windows(text: str, size: int, overlap: int) -> list[str]:
    words = text.split()
    if not words:
        return []
    step = max(1, size - overlap)
    windows = []
    for start in range(0, len(words), step):
        windows.append(" ".join(words[start : start + size]))
        if start + size >= len(words):
            break
    return windows


def analysis_text(analysis: dict[str, Any]) -> str:
    labels = [
        ("brand", "Brand"),
        ("product", "Product"),
        ("category", "Category"),
        ("tone", "Tone"),
        ("target_audience", "Audience"),
        ("call_to_action", "Call to action"),
    ]
    parts = [f"{label}: {analysis[key]}." for key, label in labels if analysis.get(key)]
    claims = [str(claim) for claim in analysis.get("claims") or [] if claim]
    if claims:
        parts.append("Claims: " + "; ".join(claims) + ".")
    if analysis.get("summary"):
        parts.append(str(analysis["summary"]))
    return " ".join(parts)


def media_text(source_name: str, facts: dict[str, Any], scene_times: list[float]) -> str:
    parts = [
        f"Video advert {source_name}: {facts['duration_seconds']:.1f} seconds",
        f"{facts['width']}x{facts['height']}",
    ]
    if facts.get("fps"):
        parts.append(f"{facts['fps']:g} frames per second")
    parts.append(f"{facts.get('video_codec') or 'unknown'} video")
    parts.append(f"{facts['audio_codec']} audio" if facts.get("has_audio") else "no audio")
    text = ", ".join(parts) + "."
    if scene_times:
        cuts = ", ".join(f"{t:.1f} s" for t in scene_times)
        text += f" {len(scene_times)} scenes starting at {cuts}."
    return text


class Chunking:
    name = "chunking"

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config

    def run(self, ctx: StageContext) -> None:
        texts: list[tuple[str, str]] = []
        transcript = ctx.state.get("transcript")
        if transcript is not None:
            windows = word_windows(
                transcript.text, self._config.chunk_words, self._config.chunk_overlap_words
            )
            texts += [("transcript", window) for window in windows]
        analysis = ctx.state.get("analysis")
        if analysis:
            rendered = analysis_text(analysis)
            if rendered:
                texts.append(("analysis", rendered))
        source = ctx.state["source"]
        scene_times = [frame.timestamp_seconds for frame in ctx.state.get("keyframes") or []]
        name = source.location.rsplit("/", 1)[-1]
        texts.append(("media", media_text(name, ctx.state["media"], scene_times)))
        ctx.state["chunks"] = [
            TextChunk(index=i, kind=kind, text=text) for i, (kind, text) in enumerate(texts)
        ]
        provenance.used(ctx, self.name, f"words:{self._config.chunk_words}")
        ctx.progress(1.0)
