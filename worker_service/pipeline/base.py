"""The pipeline interface: named stages run in order, each reporting its progress.

The worker knows nothing of what a stage does, nor of what a job's input means. It asks the
pipeline to check the input (the `validating_input` stage), builds a `StageContext` per job,
runs the stages in a thread of their own (so that the heartbeat stream on the event loop keeps
flowing while a stage blocks on ffmpeg, S3 or an LLM) and turns `TransientError` /
`PermanentError` (see `errors`) into a retryable or a permanent `Fail`.

A pipeline factory (`WORKER_PIPELINE=module:callable`) builds whatever its stages need: the
nine-stage pipeline's factory opens the channel through which `persist` stores adverts, and
hands the pipeline a `close` that the worker calls when it stops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# The error classes are part of this interface for the pipelines that implement it; they live
# in a leaf module so that providers can raise them without importing the pipeline.
from worker_service.pipeline.errors import JobStopped, PermanentError, StageError, TransientError

__all__ = [
    "InputCheck",
    "JobStopped",
    "PermanentError",
    "Pipeline",
    "Stage",
    "StageContext",
    "StageError",
    "TransientError",
]

# Raises a StageError (PermanentError for a malformed input) when a job cannot run; whatever it
# returns is ignored. It runs on the worker's event loop: a cheap look at the input, no network.
InputCheck = Callable[[Mapping[str, Any]], object]


@dataclass
class StageContext:
    """What one job's stages share. Stages run in one thread, one after another."""

    job_id: str
    lease: int
    input: dict[str, Any]
    workdir: Path
    # Called with 0..1 within the current stage; the worker maps it to the job's progress.
    report_progress: Callable[[float], None] = lambda _fraction: None
    # Set by the worker when the job is cancelled, its lease lost or the worker stops.
    stop_event: threading.Event = field(default_factory=threading.Event)
    # Results of earlier stages, keyed by what they produced ("media", "transcript", ...).
    state: dict[str, Any] = field(default_factory=dict)
    # The job's output; the worker adds stage timings and sends it with Complete.
    output: dict[str, Any] = field(default_factory=dict)

    def check_stopped(self) -> None:
        """Stages call this between steps of long work; it raises JobStopped when told to stop."""
        if self.stop_event.is_set():
            raise JobStopped(self.job_id)

    def progress(self, fraction: float) -> None:
        """Report progress within the current stage and honour a stop request."""
        self.check_stopped()
        self.report_progress(min(1.0, max(0.0, fraction)))


class Stage(Protocol):
    """One named step. `name` is what heartbeats report as the job's stage."""

    name: str

    def run(self, ctx: StageContext) -> None: ...


@dataclass
class Pipeline:
    stages: Sequence[Stage]
    # What a job's input must look like; None accepts any input and leaves it to the stages.
    validate_input: InputCheck | None = None
    # Releases what the factory opened (a channel to the queue service) when the worker stops.
    close: Callable[[], None] = lambda: None

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def check_input(self, job_input: Mapping[str, Any]) -> None:
        """Raise a StageError naming what is wrong with `job_input`, before any stage runs."""
        if self.validate_input is not None:
            self.validate_input(job_input)

    def __len__(self) -> int:
        return len(self.stages)
