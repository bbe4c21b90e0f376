"""Protobuf messages from the queue service -> the REST API's JSON models.

A `Job` mirrors a row of `ingestion_jobs`, so the JSON uses the column names. proto3 cannot tell
an empty string or an unset timestamp from an absent one; the database has NULL there, so absent
values become null. The health rule lives here too, next to the stats it is computed from.
An `Advert` (AdvertService) converts the same way, without its embedding vectors.
"""

from __future__ import annotations

from typing import Any

from gateway.schemas import (
    STATUSES,
    Advert,
    AdvertChunk,
    AuditEntry,
    Health,
    Job,
    JobError,
    Keyframe,
    RunningJob,
    Stats,
    StatusCounts,
    Summary,
)
from jobqueue.rpc import struct_to_dict, to_datetime
from jobqueue.v1 import admin_service_pb2, advert_service_pb2, job_pb2

STATUS_PREFIX = "JOB_STATUS_"


def status_name(value: int) -> str:
    return job_pb2.JobStatus.Name(value).removeprefix(STATUS_PREFIX)


def status_value(name: str) -> job_pb2.JobStatus:
    return job_pb2.JobStatus.Value(STATUS_PREFIX + name)  # type: ignore[return-value]


def job(message: job_pb2.Job) -> Job:
    return Job(
        id=message.id,
        queue=message.queue,
        status=status_name(message.status),  # type: ignore[arg-type]
        priority=message.priority,
        attempts=message.attempts,
        max_attempts=message.max_attempts,
        run_after=to_datetime(message, "run_after"),
        locked_at=to_datetime(message, "locked_at"),
        locked_by=message.locked_by or None,
        input=_struct(message, "input"),
        output=_struct(message, "output"),
        idempotency_key=message.idempotency_key or None,
        last_error=message.last_error or None,
        error_code=message.error_code or None,
        errors=[
            JobError(
                attempt=entry.attempt,
                time=to_datetime(entry, "time"),
                code=entry.code or None,
                message=entry.message or None,
            )
            for entry in message.errors
        ],
        errors_total=message.errors_total,
        stage=message.stage or None,
        progress=message.progress,
        last_heartbeat_at=to_datetime(message, "last_heartbeat_at"),
        processing_started_at=to_datetime(message, "processing_started_at"),
        processing_completed_at=to_datetime(message, "processing_completed_at"),
        completed_at=to_datetime(message, "completed_at"),
        created_at=to_datetime(message, "created_at"),
        updated_at=to_datetime(message, "updated_at"),
        lease=message.lease,
        cancel_requested=message.cancel_requested,
        trace_context=message.trace_context or None,
        audit_trail=[
            AuditEntry(
                at=to_datetime(entry, "at"),
                action=entry.action,
                role=entry.role,
                credential=entry.credential,
                operator=entry.operator or None,
                outcome=entry.outcome,
            )
            for entry in message.audit_trail
        ],
    )


def running(message: job_pb2.RunningJob) -> RunningJob:
    return RunningJob(
        job=job(message.job),
        running_seconds=round(message.running.ToTimedelta().total_seconds(), 3),
        heartbeat_age_seconds=round(message.heartbeat_age.ToTimedelta().total_seconds(), 3),
    )


def advert(message: advert_service_pb2.Advert) -> Advert:
    return Advert(
        id=message.id,
        source_key=message.source_key,
        job_id=message.job_id or None,
        media=_struct(message, "media"),
        transcript=message.transcript or None,
        analysis=_struct(message, "analysis"),
        keyframes=[
            Keyframe(
                timestamp_seconds=frame.timestamp_seconds,
                uri=frame.uri,
                width=frame.width,
                height=frame.height,
            )
            for frame in message.keyframes
        ],
        chunks=[
            AdvertChunk(
                index=chunk.index,
                kind=chunk.kind,
                text=chunk.text,
                embedding_model=chunk.embedding_model or None,
                embedding_dimension=len(chunk.embedding),
            )
            for chunk in message.chunks
        ],
        provenance=_struct(message, "provenance"),
        created_at=to_datetime(message, "created_at"),
        updated_at=to_datetime(message, "updated_at"),
    )


def _struct(message: Any, name: str) -> dict[str, Any] | None:
    return struct_to_dict(getattr(message, name)) if message.HasField(name) else None


def stats(message: admin_service_pb2.QueueStats) -> Stats:
    counts = {name: int(message.by_status.get(name, 0)) for name in STATUSES}
    return Stats(by_status=StatusCounts(**counts), total=sum(counts.values()))


def summary(message: admin_service_pb2.QueueStats) -> Summary:
    counts = stats(message).by_status
    return Summary(
        running=counts.RUNNING,
        pending=counts.QUEUED + counts.RETRY,
        failed=counts.FAILED,
        has_dead_letter=counts.FAILED > 0,
        stale_running=message.stale_running,
        oldest_runnable_age_seconds=round(message.oldest_runnable_age_seconds, 3),
    )


def health(summary: Summary, max_wait_seconds: float) -> Health:
    """The queue's health, from its stats.

    - "unhealthy": work is not getting done. Some RUNNING job's heartbeat is overdue (its worker
      died and the reaper has not released it yet), or the oldest runnable job has waited longer
      than GATEWAY_HEALTH_MAX_WAIT_SECONDS (no workers, or far too few).
    - "degraded": work gets done, but some jobs are in the dead letter (FAILED) and need an
      operator: retry them or accept the loss.
    - "healthy": neither.
    """
    if summary.stale_running > 0 or summary.oldest_runnable_age_seconds > max_wait_seconds:
        return "unhealthy"
    if summary.has_dead_letter:
        return "degraded"
    return "healthy"
