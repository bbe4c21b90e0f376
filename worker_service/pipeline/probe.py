"""Stage 2, probe_media: what the file is. A file that is not a video stops the job for good."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker_service.pipeline import media, provenance
from worker_service.pipeline.base import StageContext
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.errors import PermanentError


def _rate(value: str | None) -> float | None:
    # ffprobe writes rates as fractions ("30000/1001"); "0/0" means unknown.
    if not value or "/" not in value:
        return None
    num, _, den = value.partition("/")
    try:
        n, d = float(num), float(den)
    except ValueError:
        return None
    return round(n / d, 3) if d else None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def describe(data: dict[str, Any], size: int) -> dict[str, Any]:
    """The media facts we keep, from ffprobe's JSON; NOT_A_VIDEO unless it is a moving picture."""
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video"
            # Cover art in an audio file is a "video" stream too.
            and not (s.get("disposition") or {}).get("attached_pic")
        ),
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    format_name = str(fmt.get("format_name", ""))
    if video is None:
        raise PermanentError("NOT_A_VIDEO", f"the file has no video stream ({format_name})")
    if format_name == "image2" or format_name.endswith("_pipe"):
        raise PermanentError("NOT_A_VIDEO", f"the file is a still image ({format_name})")
    duration = _float(fmt.get("duration")) or _float(video.get("duration")) or 0.0
    if duration <= 0:
        raise PermanentError("NOT_A_VIDEO", "the file has no duration")
    return {
        "duration_seconds": round(duration, 3),
        "width": int(video.get("width") or 0),
        "height": int(video.get("height") or 0),
        "fps": _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        "video_codec": video.get("codec_name"),
        "pixel_format": video.get("pix_fmt"),
        "has_audio": audio is not None,
        "audio_codec": audio.get("codec_name") if audio else None,
        "audio_sample_rate": int(audio.get("sample_rate") or 0) if audio else None,
        "audio_channels": int(audio.get("channels") or 0) if audio else None,
        "format_name": format_name,
        "bit_rate": int(fmt["bit_rate"]) if str(fmt.get("bit_rate", "")).isdigit() else None,
        "size_bytes": size,
    }


class ProbeMedia:
    name = "probe_media"

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config
        self._tool = media.tool_version("ffprobe")

    def run(self, ctx: StageContext) -> None:
        path: Path = ctx.state["video_path"]
        data = media.probe(path, self._config.media_timeout_seconds)
        ctx.state["media"] = describe(data, int(ctx.state.get("video_bytes") or 0))
        provenance.used(ctx, self.name, self._tool)
        ctx.progress(1.0)
