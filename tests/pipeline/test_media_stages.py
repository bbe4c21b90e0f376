"""The media stages on a generated advert: real ffprobe/ffmpeg, real files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from tests.pipeline.conftest import make_context
from tests.pipeline.sample_media import (
    SampleAdvert,
    make_audio_only,
    make_silent_video,
    make_still_image,
)
from worker_service.pipeline.audio import ExtractAudio
from worker_service.pipeline.base import StageContext
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.errors import JobStopped, PermanentError
from worker_service.pipeline.fetch import FetchVideo
from worker_service.pipeline.keyframes import ExtractKeyframes
from worker_service.pipeline.probe import ProbeMedia

pytestmark = pytest.mark.integration

CONFIG = PipelineConfig()


def _probed(path: Path, workdir: Path) -> tuple[StageContext, list[float]]:
    ctx, reports = make_context(workdir, {"source_type": "local", "path": str(path)})
    FetchVideo(CONFIG, None).run(ctx)
    ProbeMedia(CONFIG).run(ctx)
    reports.clear()
    return ctx, reports


def test_probe_reports_what_was_generated(sample: SampleAdvert, tmp_path: Path) -> None:
    ctx, _ = _probed(sample.path, tmp_path)
    facts = ctx.state["media"]
    assert facts["width"] == sample.width
    assert facts["height"] == sample.height
    assert facts["fps"] == sample.fps
    assert facts["duration_seconds"] == pytest.approx(sample.duration, abs=0.2)
    assert facts["video_codec"] == "h264"
    assert facts["audio_codec"] == "aac"
    assert facts["has_audio"] is True
    assert facts["size_bytes"] == sample.path.stat().st_size
    assert ctx.state["provenance"]["providers"]["probe_media"].startswith("ffprobe")


@pytest.mark.parametrize(
    "make", [make_audio_only, make_still_image], ids=["audio-only", "still-image"]
)
def test_media_that_is_not_a_video_is_permanent(make: object, tmp_path: Path) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(PermanentError) as raised:
        _probed(path, tmp_path / "work")
    assert raised.value.code == "NOT_A_VIDEO"


def test_text_file_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video, whatever its name says\n")
    with pytest.raises(PermanentError) as raised:
        _probed(path, tmp_path / "work")
    assert raised.value.code == "NOT_A_VIDEO"


def test_extract_audio_writes_16k_mono_wav_with_progress(
    sample: SampleAdvert, tmp_path: Path
) -> None:
    ctx, reports = _probed(sample.path, tmp_path)
    ExtractAudio(CONFIG).run(ctx)
    audio: Path = ctx.state["audio_path"]
    # 16-bit mono at 16 kHz: 32000 bytes per second, plus a 44-byte header.
    assert (audio.stat().st_size - 44) / 32000 == pytest.approx(sample.duration, abs=0.3)
    assert reports[-1] == 1.0
    assert any(0 < r < 1 for r in reports), "progress is reported within the stage"
    assert reports == sorted(reports)


def test_video_without_sound_skips_audio_and_says_so(tmp_path: Path) -> None:
    ctx, _ = _probed(make_silent_video(tmp_path), tmp_path / "work")
    ExtractAudio(CONFIG).run(ctx)
    assert ctx.state["audio_path"] is None
    assert ctx.state["provenance"]["skipped"]["extract_audio"] == "the video has no audio stream"


def test_keyframes_find_each_scene(sample: SampleAdvert, tmp_path: Path) -> None:
    ctx, reports = _probed(sample.path, tmp_path)
    ExtractKeyframes(CONFIG).run(ctx)
    frames = ctx.state["keyframes"]
    assert [f.timestamp_seconds for f in frames] == pytest.approx(sample.scene_starts, abs=0.1)
    for frame in frames:
        assert (frame.width, frame.height) == (sample.width, sample.height)
        assert frame.path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
    assert reports[-1] == 1.0


def test_keyframes_are_capped_and_spread(sample: SampleAdvert, tmp_path: Path) -> None:
    ctx, _ = _probed(sample.path, tmp_path)
    ExtractKeyframes(PipelineConfig(max_keyframes=2)).run(ctx)
    times = [f.timestamp_seconds for f in ctx.state["keyframes"]]
    assert times == pytest.approx([sample.scene_starts[0], sample.scene_starts[2]], abs=0.1)
    assert "kept 2 of 4" in ctx.state["provenance"]["notes"]["keyframes"]


def _child_commands() -> list[str]:
    pid = os.getpid()
    children: list[str] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += (task / "children").read_text().split()
    commands = []
    for child in children:
        with contextlib.suppress(FileNotFoundError):
            commands.append(Path(f"/proc/{child}/comm").read_text().strip())
    return commands


def test_stop_request_kills_ffmpeg_mid_stage(sample: SampleAdvert, tmp_path: Path) -> None:
    ctx, reports = _probed(sample.path, tmp_path)
    # The runner sets stop_event from another thread; the stage notices at its next progress
    # report, which comes from ffmpeg's first progress line, i.e. while ffmpeg runs.
    ctx.stop_event.set()
    with pytest.raises(JobStopped):
        ExtractKeyframes(CONFIG).run(ctx)
    assert reports == []
    assert "ffmpeg" not in _child_commands()
