"""The pipeline interface: named stages run in order, each reporting its progress.

The worker knows nothing of what a stage does, nor of what a job's input means. It asks the
pipeline to check the input (the `validating_input` stage), builds a `StageContext` per job,
runs the stages one after another in a worker thread (so that the heartbeat stream on the event
loop keeps flowing while a stage blocks on ffmpeg, S3 or an LLM) and turns
`TransientError` / `PermanentError` (see `errors`) into a retryable or a permanent `Fail`. A
stage that blocks should watch `ctx.stop_event` (or call `ctx.progress`) so that a cancel or a
lost lease stops it; one that does not is abandoned to its thread, never waited for.

A pipeline factory (`WORKER_PIPELINE=module:callable`) builds whatever its stages need: the
nine-stage pipeline's factory opens the channel through which `persist` stores adverts, and
hands the pipeline a `close` that the worker calls when it stops.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
    "StopSignal",
    "TransientError",
]

# Raises a StageError (PermanentError for a malformed input) when a job cannot run; whatever it
# returns is ignored. It runs as the job starts, in the thread that then runs its stages: a cheap
# look at the input, no network.
InputCheck = Callable[[Mapping[str, Any]], object]


# Making a job's workdir and closing its context do not cross (a stage thread abandoned at a
# stop may ask for the folder while the worker closes the context), nor do two first waits on
# a stop signal. Rare and slow anyway.
_WORKDIRS = threading.Lock()


class StopSignal:
    """A job's stop request, as a stage sees it: `is_set()` to test it, `wait(timeout)` to sleep
    until it comes (like threading.Event, for which it stands in). Cheap to make, as every job
    makes one: the Event behind `wait` is made only when a stage first waits."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        event = self._event
        if event is None:
            with _WORKDIRS:
                if self._event is None:
                    self._event = threading.Event()
                event = self._event
        if self._set:  # set before the event existed
            event.set()
        return event.wait(timeout)


class StageContext:
    """What one job's stages share. Stages run in one thread, one after another.

    `workdir` is the job's own folder, made on first use: a pipeline that never asks for one
    (a quick job that only calls a service) costs no file system work. The worker deletes the
    folder it made when the job's stages end; a folder handed in (`workdir=`) is the caller's.
    """

    def __init__(
        self,
        job_id: str,
        lease: int,
        input: dict[str, Any],
        workdir: Path | None = None,
        # Called with 0..1 within the current stage; the worker maps it to the job's progress.
        report_progress: Callable[[float], None] = lambda _fraction: None,
        # Set by the worker when the job is cancelled, its lease lost or the worker stops.
        stop_event: StopSignal | threading.Event | None = None,
        # Results of earlier stages, keyed by what they produced ("media", "transcript", ...).
        state: dict[str, Any] | None = None,
        # The job's output; the worker adds stage timings and sends it with Complete.
        output: dict[str, Any] | None = None,
    ) -> None:
        self.job_id = job_id
        self.lease = lease
        self.input = input
        self.report_progress = report_progress
        self.stop_event = stop_event if stop_event is not None else StopSignal()
        self.state: dict[str, Any] = {} if state is None else state
        self.output: dict[str, Any] = {} if output is None else output
        self._workdir = workdir
        self._made_workdir = False
        self._closed = False

    @property
    def workdir(self) -> Path:
        """The job's folder, made on first use (and deleted by the worker when the job ends)."""
        if self._workdir is None:
            with _WORKDIRS:
                if self._closed:
                    # The job is over (a stage thread that ignored its stop): nothing to write.
                    raise JobStopped(self.job_id)
                prefix = f"job-{self.job_id[:8]}-"
                self._workdir = Path(tempfile.mkdtemp(prefix=prefix))
                self._made_workdir = True
        return self._workdir

    def close(self) -> None:
        """Delete the folder this context made, if any; later asks for one raise JobStopped.
        Called by the thread that ran the stages, once they have returned."""
        self._closed = True
        if self._made_workdir:
            with _WORKDIRS:
                made = self._workdir
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)

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
