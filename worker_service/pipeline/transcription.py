"""Stage 4, transcription: what is said in the advert, when a transcription provider is set up.

Without one the stage is skipped and says why; it never invents a transcript. (Offline
recognition with pocketsphinx was measured on the tests' spoken advert and got almost every
word wrong, so it is not offered as a fallback.)
"""

from __future__ import annotations

from pathlib import Path

from worker_service.pipeline import provenance
from worker_service.pipeline.base import StageContext
from worker_service.providers.interfaces import Transcriber


class Transcription:
    name = "transcription"

    def __init__(self, transcriber: Transcriber | None, unavailable_reason: str) -> None:
        self._transcriber = transcriber
        self._unavailable_reason = unavailable_reason

    def run(self, ctx: StageContext) -> None:
        ctx.state["transcript"] = None
        audio: Path | None = ctx.state.get("audio_path")
        if audio is None:
            provenance.skipped(ctx, self.name, "no audio to transcribe")
            return
        if self._transcriber is None:
            provenance.skipped(ctx, self.name, self._unavailable_reason)
            return
        ctx.progress(0.05)
        transcript = self._transcriber.transcribe(audio)
        ctx.state["transcript"] = transcript
        provenance.used(ctx, self.name, self._transcriber.name)
        if not transcript.text:
            provenance.note(ctx, self.name, "no speech recognised")
        ctx.progress(1.0)
