"""The worker's output lines: the checklist's exact shapes, in one place.

Operators and scripts grep these lines (`Jobs succeeded: N`, `Released N stale jobs`), so they
are formatted here by pure functions with unit tests, and printed nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobqueue.v1 import job_pb2


def short_id(job_id: str) -> str:
    """The first 8 characters of a job's UUID: what the checklist's lines show."""
    return job_id[:8]


def source_label(job_input: Mapping[str, Any]) -> str:
    """`s3:KEY` or `local:PATH`: where the job's video comes from."""
    source_type = str(job_input.get("source_type") or "")
    if source_type == "s3":
        return f"s3:{job_input.get('s3_key', '')}"
    if source_type == "local":
        return f"local:{job_input.get('path', '')}"
    return f"{source_type or 'unknown'}:?"


def starting(queue_addr: str, worker_id: str) -> list[str]:
    return [
        "TellyAds RAG Worker Starting",
        f"Queue service: {queue_addr}",
        f"Worker ID: {worker_id}",
    ]


def pipeline_ready(stages: int) -> str:
    return f"Pipeline initialized with {stages} stages"


READY = "Worker ready - starting poll loop"


def processing(job_id: str, attempt: int, max_attempts: int, label: str) -> str:
    return f"Processing job {short_id(job_id)}... (attempt {attempt}/{max_attempts}): {label}"


def succeeded(job_id: str, seconds: float, ad_id: object) -> str:
    return f"Job {short_id(job_id)} succeeded in {seconds:.1f}s: ad_id={ad_id}"


def failed(job_id: str, seconds: float, code: str, message: str, outcome: str) -> str:
    """`outcome` says what happens next: `will retry in 10s`, `dead letter`, ..."""
    first_line = message.strip().splitlines()[0] if message.strip() else ""
    return f"Job {short_id(job_id)} failed in {seconds:.1f}s: {code}: {first_line} ({outcome})"


def cancelled(job_id: str, seconds: float) -> str:
    return f"Job {short_id(job_id)} cancelled after {seconds:.1f}s"


def lease_lost(job_id: str, seconds: float) -> str:
    return (
        f"Job {short_id(job_id)} lost its lease after {seconds:.1f}s "
        "(released or claimed elsewhere); not completing it"
    )


def fenced(job_id: str, seconds: float, silent: float) -> str:
    return (
        f"Job {short_id(job_id)} stopped after {seconds:.1f}s: no heartbeat acknowledged for "
        f"{silent:.1f}s (the queue service releases it); not completing it"
    )


def handed_back(job_id: str, seconds: float) -> str:
    return f"Job {short_id(job_id)} handed back after {seconds:.1f}s (worker shutting down)"


def counters(processed: int, succeeded: int, failed: int) -> list[str]:
    return [
        f"Jobs processed: {processed}",
        f"Jobs succeeded: {succeeded}",
        f"Jobs failed: {failed}",
    ]


def released(count: int) -> str:
    return f"Released {count} stale jobs"


def running_jobs(jobs: list[job_pb2.RunningJob]) -> list[str]:
    """`Running jobs: N` and one line per job, as the checklist's Test 12 shows."""
    lines = [f"Running jobs: {len(jobs)}"]
    for entry in jobs:
        running = round(entry.running.ToNanoseconds() / 1e9)
        age = round(entry.heartbeat_age.ToNanoseconds() / 1e9)
        lines.append(
            f"  {short_id(entry.job.id)}...: stage={entry.job.stage or '-'} "
            f"progress={round(entry.job.progress * 100)}% running={running}s heartbeat_age={age}s"
        )
    return lines
