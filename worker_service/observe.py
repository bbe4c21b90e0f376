"""What one job's run tells operators: its metrics, its spans and its log fields.

A `JobRun` holds one `JobObservation` (job_run.py calls it at each step of the job's life). While
metrics, tracing and JSON logs are all off, every job shares `UNOBSERVED`, whose methods do
nothing, so the hot path pays one attribute call per step and nothing else.

The spans continue the job's own trace (the trace context it was enqueued in, Job.trace_context):

    job (claim -> settled)
      ├─ claimed      (waiting in this worker for a stage thread)
      ├─ <stage>      one per pipeline stage, current in its thread, so that the calls it makes
      │               (the advert sink's StoreAdvert) join the trace
      └─ settle       (its Complete or Fail, from handed over to answered)
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from jobqueue import logs, tracing
from jobqueue.v1 import job_pb2
from worker_service import metrics
from worker_service.stage_thread import StagesDone
from worker_service.stop_reason import StopReason

TRACER = "worker_service"
StageStarted = Callable[[str, float], None]


class Unobserved:
    """Every step a no-op: nothing is watching."""

    def executing(self) -> None:
        pass

    def stage_hook(self, started: StageStarted) -> StageStarted:
        return started

    def executed(self, outcome: object) -> None:
        pass

    def settling(self) -> None:
        pass

    def ended(self, success: bool, stop_reason: StopReason | None) -> None:
        pass

    def close(self) -> None:
        pass


UNOBSERVED = Unobserved()


def job(job: job_pb2.Job, worker_id: str) -> Unobserved:
    """The observation of one claimed job: `UNOBSERVED` when nothing is on."""
    if not (metrics.enabled() or tracing.enabled() or logs.structured()):
        return UNOBSERVED
    return JobObservation(job, worker_id)


def outcome_of(success: bool, stop_reason: StopReason | None) -> str:
    if success:
        return "succeeded"
    if stop_reason is StopReason.CANCEL:
        return "cancelled"
    if stop_reason is StopReason.SHUTDOWN:
        return "handed_back"
    if stop_reason is StopReason.LEASE_LOST:
        return "lease_lost"
    return "failed"


class JobObservation(Unobserved):
    def __init__(self, job: job_pb2.Job, worker_id: str) -> None:
        self.queue = job.queue or "default"
        self.fields = {"job_id": job.id, "attempt": job.attempts, "worker_id": worker_id}
        self._began = time.monotonic()
        self._ran_from: float | None = None
        self._outcome: str | None = None
        self._log_token: contextvars.Token[Any] | None = None
        self._job_span: Span | None = None
        self._claimed: Span | None = None
        self._stage: Span | None = None
        self._stage_token: object = None
        self._settle: Span | None = None
        if tracing.enabled():
            tracer = tracing.tracer(TRACER)
            attributes: dict[str, str | int] = {
                "jobqueue.job_id": job.id,
                "jobqueue.attempt": job.attempts,
                "jobqueue.worker_id": worker_id,
                "jobqueue.queue": self.queue,
            }
            self._job_span = tracer.start_span(
                "job", context=tracing.context_of(job.trace_context), attributes=attributes
            )
            self._claimed = tracer.start_span("claimed", context=self._in_job())

    def _in_job(self) -> otel_context.Context | None:
        if self._job_span is None:
            return None
        return trace.set_span_in_context(self._job_span)

    # -- in the stage thread ---------------------------------------------------------------------

    def executing(self) -> None:
        self._ran_from = time.monotonic()
        if metrics.enabled():
            metrics.RUNNING.inc()
        if self._claimed is not None:
            self._claimed.end()
            self._claimed = None
        self._log_token = logs.bind_job(self.fields)

    def stage_hook(self, started: StageStarted) -> StageStarted:
        def stage_started(stage: str, progress: float) -> None:
            logs.set_stage(stage)
            if self._job_span is not None:
                self._end_stage()
                self._stage = tracing.tracer(TRACER).start_span(stage, context=self._in_job())
                self._stage_token = otel_context.attach(trace.set_span_in_context(self._stage))
            started(stage, progress)

        return stage_started

    def _end_stage(self, error: BaseException | None = None) -> None:
        if self._stage is None:
            return
        otel_context.detach(self._stage_token)  # type: ignore[arg-type]
        tracing.end_span(self._stage, error)
        self._stage, self._stage_token = None, None

    def executed(self, outcome: object) -> None:
        self._end_stage(outcome if isinstance(outcome, BaseException) else None)
        if metrics.enabled():
            metrics.RUNNING.dec()
            if isinstance(outcome, StagesDone):
                for stage, seconds in outcome.timings.items():
                    metrics.STAGE_DURATION.labels(stage).observe(seconds)
        if self._log_token is not None:
            logs.unbind_job(self._log_token)
            self._log_token = None

    # -- on the event loop -----------------------------------------------------------------------

    def settling(self) -> None:
        if self._job_span is not None:
            self._settle = tracing.tracer(TRACER).start_span("settle", context=self._in_job())

    def ended(self, success: bool, stop_reason: StopReason | None) -> None:
        self._outcome = outcome_of(success, stop_reason)
        if metrics.enabled():
            seconds = time.monotonic() - (self._ran_from or self._began)
            metrics.JOBS.labels(self.queue, self._outcome).inc()
            metrics.JOB_DURATION.labels(self.queue, self._outcome).observe(seconds)

    def close(self) -> None:
        outcome = self._outcome or "handed_back"
        for span in (self._claimed, self._settle, self._job_span):
            if span is not None and span.is_recording():
                span.set_attribute("jobqueue.outcome", outcome)
                if outcome not in ("succeeded", "handed_back"):
                    span.set_status(Status(StatusCode.ERROR, outcome))
                span.end()
        self._claimed = self._settle = self._job_span = None
