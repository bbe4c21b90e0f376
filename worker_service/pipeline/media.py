"""ffprobe and ffmpeg, run as subprocesses with progress, timeouts and stop requests.

ffmpeg writes machine-readable progress (`-progress pipe:1`) to stdout, which we read line by
line to report progress within a stage and to notice a stop request; its log goes to a file in
the job's workdir (a pipe could fill up and block it). A stop or a timeout kills the process, so
a cancelled job does not leave ffmpeg running.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from worker_service.pipeline.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

TOOLS = ("ffmpeg", "ffprobe")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def tool_version(tool: str) -> str:
    """e.g. "ffmpeg 5.1.9-0+deb12u1", for provenance."""
    try:
        out = subprocess.run(
            [tool, "-version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return tool
    words = out.split()
    return f"{tool} {words[2]}" if len(words) > 2 and words[1] == "version" else tool


def probe(path: Path, timeout: float) -> dict[str, Any]:
    """ffprobe's JSON for the file's format and streams; NOT_A_VIDEO when it cannot read it."""
    try:
        result = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-print_format",
                "json",
                "-show_format",
                "-show_streams",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise TransientError("MEDIA_TOOL_TIMEOUT", f"ffprobe took over {timeout:.0f} s") from error
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["unreadable"]
        raise PermanentError("NOT_A_VIDEO", f"ffprobe cannot read the file: {detail[0]}")
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise PermanentError("NOT_A_VIDEO", "ffprobe gave no readable description") from error
    return data


def run_ffmpeg(
    args: Sequence[str],
    *,
    duration: float,
    progress: Callable[[float], None],
    timeout: float,
    log_path: Path,
    what: str,
) -> str:
    """Run ffmpeg with `args` (inputs, filters, outputs); return its log (stderr).

    `progress` receives the fraction of `duration` processed; it is the stage's ctx.progress,
    so it raises JobStopped on a stop request, which kills ffmpeg here.
    """
    command = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-y", "-progress", "pipe:1"]
    command += list(args)
    timed_out = threading.Event()
    with log_path.open("w+") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1
        )

        def kill_on_timeout() -> None:
            timed_out.set()
            process.kill()

        watchdog = threading.Timer(timeout, kill_on_timeout)
        watchdog.daemon = True
        watchdog.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                key, _, value = line.strip().partition("=")
                if key == "out_time_us" and duration > 0 and value.lstrip("-").isdigit():
                    progress(int(value) / 1e6 / duration)
            returncode = process.wait()
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
        stderr.seek(0)
        output = stderr.read()
    if timed_out.is_set():
        raise TransientError("MEDIA_TOOL_TIMEOUT", f"{what}: ffmpeg took over {timeout:.0f} s")
    if returncode != 0:
        tail = " | ".join(output.strip().splitlines()[-3:])
        # ffprobe accepted the file, so a failure here means it is damaged past what ffmpeg can
        # decode: the same file will fail the same way next time.
        raise PermanentError("MEDIA_PROCESSING_FAILED", f"{what}: ffmpeg failed: {tail}")
    return output
