"""Stage 5, keyframes: one frame per scene (the first frame, then every scene change).

ffmpeg's scene score (0..1, how different a frame is from the one before) picks the frames in
one decoding pass; `showinfo` tells each picked frame's time and size. An advert cut faster than
MAX_KEYFRAMES scenes keeps an evenly spread subset, so storage and LLM cost stay bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from worker_service.pipeline import media, provenance
from worker_service.pipeline.base import StageContext
from worker_service.pipeline.config import PipelineConfig

# Frames wider than this are scaled down: enough to recognise a scene, a fraction of the bytes.
MAX_WIDTH = 1280

_SHOWINFO = re.compile(r"\bn:\s*\d+\s+pts:\s*-?\d+\s+pts_time:(-?[\d.]+).*?\bs:(\d+)x(\d+)")


@dataclass(frozen=True)
class KeyframeFile:
    timestamp_seconds: float
    path: Path
    width: int
    height: int


def spread(items: list[KeyframeFile], limit: int) -> list[KeyframeFile]:
    """At most `limit` items, evenly spread, always keeping the first."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


class ExtractKeyframes:
    name = "keyframes"

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config
        self._tool = media.tool_version("ffmpeg")

    def run(self, ctx: StageContext) -> None:
        facts = ctx.state["media"]
        out_dir = ctx.workdir / "keyframes"
        out_dir.mkdir(parents=True, exist_ok=True)
        threshold = self._config.scene_threshold
        filters = f"select='eq(n,0)+gt(scene,{threshold})',scale='min({MAX_WIDTH},iw)':-2,showinfo"
        video, output = str(ctx.state["video_path"]), str(out_dir / "%04d.jpg")
        args = ["-i", video, "-an", "-vf", filters, "-fps_mode", "vfr", "-q:v", "3", output]
        log = media.run_ffmpeg(
            args,
            duration=facts["duration_seconds"],
            progress=lambda fraction: ctx.progress(0.95 * fraction),
            timeout=self._config.media_timeout_seconds,
            log_path=ctx.workdir / "keyframes.log",
            what=self.name,
        )
        # showinfo logs the picked frames in output order, which is the files' numbering.
        found = [
            KeyframeFile(
                timestamp_seconds=round(float(m.group(1)), 3),
                path=out_dir / f"{index:04d}.jpg",
                width=int(m.group(2)),
                height=int(m.group(3)),
            )
            for index, m in enumerate(_SHOWINFO.finditer(log), start=1)
        ]
        found = [frame for frame in found if frame.path.is_file()]
        kept = spread(found, self._config.max_keyframes)
        ctx.state["keyframes"] = kept
        provenance.used(ctx, self.name, f"{self._tool} scene>{threshold}")
        if len(kept) < len(found):
            provenance.note(ctx, self.name, f"kept {len(kept)} of {len(found)} scene frames")
        ctx.progress(1.0)
