"""Rows to protobuf messages and back: the only place that knows both shapes."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from uuid import UUID

from jobqueue.rpc import duration, struct, struct_to_dict, timestamp
from jobqueue.v1 import job_pb2
from queue_service.errors import InvalidArgument
from queue_service.store import Row

# Servicers convert through this module alone; the well-known-type helpers are the contract's
# (jobqueue.rpc), shared with every client, so both sides read a Struct the same way.
__all__ = [
    "PROTO_TO_STATUS",
    "STATUS_TO_PROTO",
    "decode_page_token",
    "duration",
    "encode_page_token",
    "job",
    "parse_uuid",
    "struct",
    "struct_to_dict",
    "timestamp",
]

STATUS_TO_PROTO: dict[str, job_pb2.JobStatus] = {
    "QUEUED": job_pb2.JOB_STATUS_QUEUED,
    "RUNNING": job_pb2.JOB_STATUS_RUNNING,
    "SUCCEEDED": job_pb2.JOB_STATUS_SUCCEEDED,
    "RETRY": job_pb2.JOB_STATUS_RETRY,
    "FAILED": job_pb2.JOB_STATUS_FAILED,
    "CANCELLED": job_pb2.JOB_STATUS_CANCELLED,
}
PROTO_TO_STATUS = {value: name for name, value in STATUS_TO_PROTO.items()}


def parse_uuid(value: str, field: str = "job_id") -> UUID:
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{field} must be a UUID, got {value!r}", field=field) from None


def job(row: Row) -> job_pb2.Job:
    errors = [
        job_pb2.JobError(
            attempt=int(entry.get("attempt") or 0),
            time=timestamp(datetime.fromisoformat(entry["time"])) if entry.get("time") else None,
            code=entry.get("code") or "",
            message=entry.get("message") or "",
        )
        for entry in row.get("errors") or []
    ]
    return job_pb2.Job(
        id=str(row["id"]),
        queue=row["queue"],
        status=STATUS_TO_PROTO[row["status"]],
        priority=row["priority"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        run_after=timestamp(row["run_after"]),
        locked_at=timestamp(row["locked_at"]),
        locked_by=row["locked_by"] or "",
        input=struct(row["input"]),
        output=struct(row["output"]),
        idempotency_key=row["idempotency_key"],
        last_error=row["last_error"] or "",
        error_code=row["error_code"] or "",
        errors=errors,
        stage=row["stage"] or "",
        progress=row["progress"],
        last_heartbeat_at=timestamp(row["last_heartbeat_at"]),
        processing_started_at=timestamp(row["processing_started_at"]),
        processing_completed_at=timestamp(row["processing_completed_at"]),
        completed_at=timestamp(row["completed_at"]),
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
        lease=row["lease"],
        cancel_requested=row["cancel_requested_at"] is not None,
    )


def encode_page_token(row: Row) -> str:
    raw = f"{row['created_at'].isoformat()}|{row['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        created_at, job_id = raw.split("|")
        parsed = datetime.fromisoformat(created_at)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed, UUID(job_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(
            "page_token is not one this service issued", field="page_token"
        ) from None
