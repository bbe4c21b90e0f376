"""The worker's Prometheus families, served on WORKER_METRICS_LISTEN (off unless set).

docs/observability.md has the table. Each worker serves its own; Prometheus tells them apart by
their target (compose: one per container), so no family carries the worker's id.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from jobqueue.metrics import SECONDS_BUCKETS

JOBS = Counter(
    "jobqueue_worker_jobs_total",
    "Jobs this worker settled, by queue and outcome (succeeded, failed, cancelled, "
    "handed_back, lease_lost).",
    ["queue", "outcome"],
)
JOB_DURATION = Histogram(
    "jobqueue_worker_job_duration_seconds",
    "A job's run on this worker: from the start of its stages to its settlement.",
    ["queue", "outcome"],
    buckets=SECONDS_BUCKETS,
)
STAGE_DURATION = Histogram(
    "jobqueue_worker_stage_duration_seconds",
    "Each pipeline stage's run time (stages that finished).",
    ["stage"],
    buckets=SECONDS_BUCKETS,
)
RUNNING = Gauge("jobqueue_worker_jobs_running", "Jobs running their stages on this worker now.")
HEARTBEAT_ROUNDTRIP = Histogram(
    "jobqueue_worker_heartbeat_roundtrip_seconds",
    "Heartbeat lag as the worker sees it: from a heartbeat message sent to its answer (the "
    "beats written to the database).",
    buckets=SECONDS_BUCKETS,
)

_on = False


def enabled() -> bool:
    return _on


def turn_on() -> None:
    """Record from now on (the worker serves them: WORKER_METRICS_LISTEN)."""
    global _on
    _on = True


class TimedHeartbeats:
    """A heartbeat stream call whose answers are timed against their requests (the service
    answers a stream's messages in order, one answer each)."""

    def __init__(self, open_call: Callable[[AsyncIterator[Any]], Any], requests: Any) -> None:
        self._sent: deque[float] = deque()
        self._call = open_call(self._timed(requests))

    async def _timed(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            self._sent.append(time.perf_counter())
            yield request

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._answers()

    async def _answers(self) -> AsyncIterator[Any]:
        async for response in self._call:
            if self._sent:
                HEARTBEAT_ROUNDTRIP.observe(time.perf_counter() - self._sent.popleft())
            yield response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)
