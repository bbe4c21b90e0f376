"""Stage 3, extract_audio: the soundtrack as 16 kHz mono WAV, what speech recognisers expect."""

from __future__ import annotations

from worker_service.pipeline import media, provenance
from worker_service.pipeline.base import StageContext
from worker_service.pipeline.config import PipelineConfig


class ExtractAudio:
    name = "extract_audio"

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config
        self._tool = media.tool_version("ffmpeg")

    def run(self, ctx: StageContext) -> None:
        facts = ctx.state["media"]
        if not facts["has_audio"]:
            ctx.state["audio_path"] = None
            provenance.skipped(ctx, self.name, "the video has no audio stream")
            return
        out = ctx.workdir / "audio.wav"
        # 16 kHz mono 16-bit PCM: what speech recognisers expect, 32 kB per second.
        video = str(ctx.state["video_path"])
        args = ["-i", video, "-vn", "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(out)]
        media.run_ffmpeg(
            args,
            duration=facts["duration_seconds"],
            progress=ctx.progress,
            timeout=self._config.media_timeout_seconds,
            log_path=ctx.workdir / "extract_audio.log",
            what=self.name,
        )
        ctx.state["audio_path"] = out
        provenance.used(ctx, self.name, self._tool)
        ctx.progress(1.0)
