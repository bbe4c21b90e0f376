"""Stage 6, llm_analysis: the advert's brand, product, category, tone, claims and call to
action, as JSON following analysis_schema.ANALYSIS_SCHEMA. Skipped, and said so, without an LLM.
"""

from __future__ import annotations

from worker_service.pipeline import provenance
from worker_service.pipeline.base import StageContext
from worker_service.providers.interfaces import AnalysisRequest, Analyzer


class LLMAnalysis:
    name = "llm_analysis"

    def __init__(self, analyzer: Analyzer | None, unavailable_reason: str) -> None:
        self._analyzer = analyzer
        self._unavailable_reason = unavailable_reason

    def run(self, ctx: StageContext) -> None:
        ctx.state["analysis"] = None
        if self._analyzer is None:
            provenance.skipped(ctx, self.name, self._unavailable_reason)
            return
        transcript = ctx.state.get("transcript")
        keyframes = ctx.state.get("keyframes") or []
        text = transcript.text if transcript is not None else ""
        if not text and not keyframes:
            provenance.skipped(ctx, self.name, "neither speech nor keyframes to analyse")
            return
        ctx.progress(0.05)
        request = AnalysisRequest(
            transcript=text,
            media=ctx.state["media"],
            keyframes=[frame.path for frame in keyframes],
        )
        ctx.state["analysis"] = self._analyzer.analyse(request)
        provenance.used(ctx, self.name, self._analyzer.name)
        ctx.progress(1.0)
