"""A sample TV advert, made on the spot with ffmpeg and espeak-ng: what the demo ingests and
the tests feed the pipeline.

The advert: four 2-second scenes that look nothing alike (so scene detection has three cuts to
find), 320x240 at 25 fps, H.264 + AAC, with a spoken script when espeak-ng is installed (a
sine tone otherwise). Nothing is downloaded; each file takes well under a second to make.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = "Introducing Sparkle Cola. The crisp taste of summer. Buy Sparkle Cola today."
WIDTH, HEIGHT, FPS = 320, 240, 25
SCENE_SECONDS = 2.0
SCENES = (
    f"smptebars=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={SCENE_SECONDS}",
    f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={SCENE_SECONDS}",
    f"color=c=red:size={WIDTH}x{HEIGHT}:rate={FPS}:duration={SCENE_SECONDS}",
    f"mandelbrot=size={WIDTH}x{HEIGHT}:rate={FPS},trim=duration={SCENE_SECONDS}",
)
DURATION = SCENE_SECONDS * len(SCENES)
SCENE_STARTS = tuple(i * SCENE_SECONDS for i in range(len(SCENES)))


@dataclass(frozen=True)
class SampleAdvert:
    path: Path
    duration: float
    width: int
    height: int
    fps: int
    scene_starts: tuple[float, ...]
    spoken: bool


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def make_advert(folder: Path) -> SampleAdvert:
    folder.mkdir(parents=True, exist_ok=True)
    speech = folder / "speech.wav"
    spoken = shutil.which("espeak-ng") is not None
    if spoken:
        _run(["espeak-ng", "-s", "160", "-w", str(speech), SCRIPT])
        audio_input = ["-i", str(speech)]
    else:
        audio_input = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={DURATION}"]
    video_inputs: list[str] = []
    for scene in SCENES:
        video_inputs += ["-f", "lavfi", "-i", scene]
    n = len(SCENES)
    graph = (
        "".join(f"[{i}:v]" for i in range(n))
        + f"concat=n={n}:v=1:a=0,format=yuv420p[v];"
        + f"[{n}:a]aresample=44100,apad,atrim=duration={DURATION}[a]"
    )
    out = folder / "advert.mp4"
    codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "64k"]
    maps = ["-filter_complex", graph, "-map", "[v]", "-map", "[a]"]
    _run(["ffmpeg", "-v", "error", "-y", *video_inputs, *audio_input, *maps, *codecs, str(out)])
    return SampleAdvert(out, DURATION, WIDTH, HEIGHT, FPS, SCENE_STARTS, spoken)


def main() -> None:
    import sys

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    advert = make_advert(folder)
    size = f"{advert.width}x{advert.height}"
    print(f"{advert.path} ({advert.duration:.0f} s, {size}, spoken={advert.spoken})")


if __name__ == "__main__":
    main()
