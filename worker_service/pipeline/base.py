"""The pipeline interface: named stages run in order, each reporting its progress.

The worker knows nothing of what a stage does. It builds a `StageContext` per job, runs the
stages in a worker thread (so that the heartbeat stream on the event loop keeps flowing while a
stage blocks on ffmpeg, S3 or an LLM) and turns `TransientError` / `PermanentError` into a
retryable or a permanent `Fail`. Any other exception is treated as transient: the job is retried
and, after max_attempts, lands in the dead letter with its traceback summary in `last_error`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jobqueue.v1 import advert_service_pb2


class StageError(Exception):
    """A classified failure. `code` becomes the job's error_code."""

    retryable: bool = True

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TransientError(StageError):
    """Worth retrying: network, throttling, 5xx, an object not there yet."""

    retryable = True


class PermanentError(StageError):
    """Retrying cannot help: invalid input, not a video, refused credentials."""

    retryable = False


class JobStopped(Exception):  # a signal, not an error: hence no "Error" suffix
    """Raised inside a stage when the job was cancelled or its lease was lost."""


class AdvertSink(Protocol):
    """Stores an advert through the queue service (which owns the database)."""

    def store(self, advert: advert_service_pb2.Advert, job_id: str, lease: int) -> tuple[str, bool]:
        """Return (ad_id, created). Raises StageError on failure."""
        ...


@dataclass
class StageContext:
    """What one job's stages share. Stages run in one thread, one after another."""

    job_id: str
    lease: int
    input: dict[str, Any]
    workdir: Path
    advert_sink: AdvertSink
    # Called with 0..1 within the current stage; the runner maps it to the job's progress.
    report_progress: Callable[[float], None] = lambda _fraction: None
    # Set by the runner when the job is cancelled or its lease lost.
    stop_event: threading.Event = field(default_factory=threading.Event)
    # Results of earlier stages, keyed by what they produced ("media", "transcript", ...).
    state: dict[str, Any] = field(default_factory=dict)
    # The job's output; the runner adds stage timings and sends it with Complete.
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

    @property
    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def __len__(self) -> int:
        return len(self.stages)
