"""Sample media for the pipeline tests: the sample advert (scripts/sample_advert.py) and media
that is not a usable advert, made on the spot with ffmpeg."""

from __future__ import annotations

from pathlib import Path

from scripts.sample_advert import (
    DURATION,
    FPS,
    HEIGHT,
    SCENE_STARTS,
    SCRIPT,
    WIDTH,
    SampleAdvert,
    _run,
    make_advert,
)

__all__ = [
    "DURATION",
    "FPS",
    "HEIGHT",
    "SCENE_STARTS",
    "SCRIPT",
    "WIDTH",
    "SampleAdvert",
    "make_advert",
    "make_audio_only",
    "make_silent_video",
    "make_still_image",
]


def make_silent_video(folder: Path) -> Path:
    """A 2-second video with no audio stream at all."""
    out = folder / "silent.mp4"
    source = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=2"]
    _run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            *source,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            str(out),
        ]
    )
    return out


def make_audio_only(folder: Path) -> Path:
    out = folder / "tone.wav"
    _run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1", str(out)])
    return out


def make_still_image(folder: Path) -> Path:
    out = folder / "frame.png"
    source = ["-f", "lavfi", "-i", "testsrc2=size=64x48"]
    _run(["ffmpeg", "-v", "error", "-y", *source, "-frames:v", "1", str(out)])
    return out
