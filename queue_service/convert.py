"""Rows to protobuf messages and back: the only place that knows both shapes."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from jobqueue.v1 import job_pb2
from queue_service.errors import InvalidArgument
from queue_service.store import Row

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


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(int(seconds * 1e9))
    return message


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    """The Struct as JSON values. Struct carries every number as a double; whole numbers come
    back as ints, so {"n": 3} stores as 3 (not 3.0) and hashes to the same idempotency key as
    the same input enqueued from psql."""
    return _whole_numbers_as_ints(json_format.MessageToDict(message))


def _whole_numbers_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers_as_ints(item) for item in value]
    return value


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
