"""Rows to protobuf messages and back: the only place that knows both shapes.

The hot path converts with as little Python as it can: a request's Struct becomes the JSON text
the database parses (struct_json, a direct walk of the message), a response's Job is built from
the lean rows of store.py and from what the caller sent, and timestamps are converted by integer
arithmetic. Each fast conversion reads and writes the same values as the contract's helpers in
jobqueue.rpc, which every client uses (tests/queue/test_convert.py holds them to it).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from google.protobuf import struct_pb2, timestamp_pb2

from jobqueue.rpc import duration, struct
from jobqueue.v1 import job_pb2
from queue_service.errors import InvalidArgument
from queue_service.store import Claimed, Enqueued, Row, Settled

# Servicers convert through this module alone.
__all__ = [
    "PROTO_TO_STATUS",
    "STATUS_TO_PROTO",
    "claimed_job",
    "decode_page_token",
    "duration",
    "encode_page_token",
    "enqueued_job",
    "job",
    "parse_uuid",
    "settled_job",
    "struct",
    "struct_json",
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

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Doubles represent every integer below 2**53 exactly; past it a "whole" double is a rounding.
_MAX_EXACT_INTEGER = 2**53


def parse_uuid(value: str, field: str = "job_id") -> UUID:
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{field} must be a UUID, got {value!r}", field=field) from None


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """jobqueue.rpc.timestamp, a third of the cost: no float on the way."""
    if value is None:
        return None
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1_000
    )


def struct_json(message: struct_pb2.Struct, field: str) -> str:
    """The Struct as the JSON text the database stores: what json.dumps makes of
    jobqueue.rpc.struct_to_dict (whole numbers as integers, so {"n": 3} stores as 3 and hashes
    to the same idempotency key as the same input enqueued from psql), without its detour
    through json_format."""
    try:
        return json.dumps(_object(message), separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise InvalidArgument(
            f"{field} holds a number JSON cannot (NaN, Infinity)", field=field
        ) from None


def _object(message: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _value(value) for key, value in message.fields.items()}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) < _MAX_EXACT_INTEGER:
            return int(number)
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _object(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None  # null_value, or no kind at all


def job(row: Row) -> job_pb2.Job:
    """A whole row: what GetJob, ListJobs and the admin calls answer with."""
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


def enqueued_job(
    enqueued: Enqueued, queue: str, priority: int, input_: struct_pb2.Struct
) -> job_pb2.Job:
    """A job this call created, whole: the database's answer, and what the caller sent (its
    input, as sent; the rest of a new row is empty or zero)."""
    created_at = timestamp(enqueued.created_at)
    return job_pb2.Job(
        id=str(enqueued.job_id),
        queue=queue,
        status=STATUS_TO_PROTO[enqueued.status],
        priority=priority,
        max_attempts=enqueued.max_attempts,
        run_after=timestamp(enqueued.run_after),
        input=input_,
        idempotency_key=enqueued.idempotency_key,
        created_at=created_at,
        updated_at=created_at,
    )


def claimed_job(claimed: Claimed) -> job_pb2.Job:
    """A claimed job: every field but output and errors (ClaimResponse says so)."""
    claimed_at = timestamp(claimed.locked_at)
    return job_pb2.Job(
        id=str(claimed.id),
        queue=claimed.queue,
        status=STATUS_TO_PROTO[claimed.status],
        priority=claimed.priority,
        attempts=claimed.attempts,
        max_attempts=claimed.max_attempts,
        run_after=timestamp(claimed.run_after),
        locked_at=claimed_at,
        locked_by=claimed.locked_by,
        input=struct(claimed.input),
        idempotency_key=claimed.idempotency_key,
        last_error=claimed.last_error or "",
        error_code=claimed.error_code or "",
        stage=claimed.stage,
        progress=claimed.progress,
        # The claim writes its own time to all of these (migrations/job_queue/claim.sql).
        last_heartbeat_at=claimed_at,
        processing_started_at=claimed_at,
        updated_at=claimed_at,
        created_at=timestamp(claimed.created_at),
        lease=claimed.lease,
    )


def settled_job(settled: Settled, output: struct_pb2.Struct | None = None) -> job_pb2.Job:
    """A job after a Complete, Fail or Release: the fields a settle changes or that name the job
    (CompleteResponse says which); a Complete's own output, as sent."""
    assert settled.status is not None, "a settled entry that was found"
    return job_pb2.Job(
        id=str(settled.job_id),
        queue=settled.queue,
        status=STATUS_TO_PROTO[settled.status],
        attempts=settled.attempts,
        max_attempts=settled.max_attempts,
        lease=settled.lease,
        stage=settled.stage or "",
        progress=settled.progress,
        error_code=settled.error_code or "",
        last_error=settled.last_error or "",
        run_after=timestamp(settled.run_after),
        locked_by=settled.locked_by or "",
        completed_at=timestamp(settled.completed_at),
        updated_at=timestamp(settled.updated_at),
        output=output,
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
