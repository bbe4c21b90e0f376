"""Rows to protobuf messages and back: the only place that knows both shapes.

The hot path converts with as little Python as it can: a request's Struct becomes the JSON text
the database parses (struct_json, a direct walk of the message), and a response's Job is filled
in place (a message passed to a constructor is copied, and a Job inside a response inside a
batch would be copied three times) from the lean rows of store.py and from what the caller sent,
timestamps by integer arithmetic. Each fast conversion reads and writes the same values as the
contract's helpers in jobqueue.rpc, which every client uses (tests/queue/test_convert.py holds
them to it).
"""

from __future__ import annotations

import base64
import binascii
import json
import operator
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any
from uuid import UUID

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from jobqueue.rpc import duration, json_number, struct, struct_to_dict
from jobqueue.v1 import job_pb2
from queue_service.errors import InvalidArgument
from queue_service.store import Claimed, Enqueued, Row, Settled

# Servicers convert through this module alone.
__all__ = [
    "MAX_NESTING",
    "PROTO_TO_STATUS",
    "STATUS_TO_PROTO",
    "ClaimedJobs",
    "Undeliverable",
    "decode_page_token",
    "duration",
    "encode_page_token",
    "errors_total",
    "fill_enqueued",
    "fill_settled",
    "job",
    "json_text",
    "parse_uuid",
    "seconds",
    "shown_struct",
    "struct",
    "struct_json",
    "struct_object",
    "timestamp",
    "to_datetime",
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
# Made once: json.dumps with options other than the defaults builds an encoder at every call.
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
# The range of google.protobuf.Timestamp (0001-01-01 to 9999-12-31, as Python's datetime) and
# of Duration (about 10,000 years either way); PostgreSQL holds every such time.
_MIN_TIMESTAMP_SECONDS = -62_135_596_800
_MAX_TIMESTAMP_SECONDS = 253_402_300_799
_MAX_DURATION_SECONDS = 315_576_000_000
_MAX_NANOS = 999_999_999

# How deeply a job's input or output may nest for a client to read it back. protobuf refuses to
# decode a message nested more than 100 deep, and a Struct spends three of those levels on every
# JSON object (Struct, map entry, Value) and two on every list (ListValue, Value): inside a Job
# inside a ClaimResponse, a value nested 32 objects or 48 lists deep (96 levels) still decodes
# and one more level does not (tests/queue/test_convert.py finds the edge). A row written from
# psql can hold anything jsonb can: the service would send it, and the worker's client would
# fail to read the whole answer.
MAX_NESTING = 96
_OBJECT_LEVELS = 3
_LIST_LEVELS = 2
# A shown job may sit a message deeper than a claimed one (ListRunningJobsResponse.RunningJob).
_SHOWN_NESTING = MAX_NESTING - _OBJECT_LEVELS


class Undeliverable(ValueError):
    """A stored value that no client could read as protobuf: a number beyond a double's range
    (jsonb keeps 1e400 exactly), or nesting deeper than MAX_NESTING."""


def parse_uuid(value: str, field: str = "job_id") -> UUID:
    try:
        return UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{field} must be a UUID, got {value!r}", field=field) from None


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """jobqueue.rpc.timestamp, a third of the cost: no float on the way."""
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    _set_time(message, value)
    return message


def to_datetime(message: timestamp_pb2.Timestamp, field: str) -> datetime:
    """A request's Timestamp as an aware datetime; INVALID_ARGUMENT outside Timestamp's range
    (which ToDatetime would raise as a ValueError: an INTERNAL error and a stack trace)."""
    if (
        not _MIN_TIMESTAMP_SECONDS <= message.seconds <= _MAX_TIMESTAMP_SECONDS
        or not 0 <= message.nanos <= _MAX_NANOS
    ):
        raise InvalidArgument(
            f"{field} must be a valid Timestamp: 0001-01-01 to 9999-12-31 (seconds "
            f"{_MIN_TIMESTAMP_SECONDS}..{_MAX_TIMESTAMP_SECONDS}), nanos 0..{_MAX_NANOS}",
            field=field,
        )
    return message.ToDatetime(tzinfo=UTC)


def seconds(message: duration_pb2.Duration, field: str, maximum: float) -> float:
    """A request's Duration in seconds, within 0..maximum; INVALID_ARGUMENT for a malformed one
    (nanos out of range or of the other sign than seconds) or one out of that range."""
    whole, nanos = message.seconds, message.nanos
    if (
        abs(whole) > _MAX_DURATION_SECONDS
        or abs(nanos) > _MAX_NANOS
        or (whole > 0 and nanos < 0)
        or (whole < 0 and nanos > 0)
    ):
        raise InvalidArgument(
            f"{field} must be a valid Duration (nanos -{_MAX_NANOS}..{_MAX_NANOS}, with the sign "
            "of seconds)",
            field=field,
        )
    value = whole + nanos / 1e9
    if not 0 <= value <= maximum:
        raise InvalidArgument(f"{field} must be 0..{maximum:g} s", field=field)
    return value


def _set_time(field: timestamp_pb2.Timestamp, value: datetime) -> None:
    delta = value - _EPOCH
    field.seconds = delta.days * 86_400 + delta.seconds
    field.nanos = delta.microseconds * 1_000


def struct_json(message: struct_pb2.Struct, field: str) -> str:
    """The Struct as the JSON text the database stores: what json.dumps makes of
    jobqueue.rpc.struct_to_dict (whole numbers as integers, so {"n": 3} stores as 3 and hashes
    to the same idempotency key as the same input enqueued from psql), in ASCII (\\u escapes),
    so its length is its size in bytes.

    Written by one walk of the message, with the encoder's own pieces (its C string escaping,
    float's repr): a third less than building the dict and encoding it."""
    parts: list[str] = []
    try:
        _write_object(message.fields, parts)
    except ValueError:
        raise _not_json(field) from None
    return "".join(parts)


def _write_object(fields: Any, parts: list[str]) -> None:
    parts.append("{")
    separator = ""
    for key in fields:  # (by key, as struct_to_dict reads it: the same order)
        parts.append(separator)
        parts.append(encode_basestring_ascii(key))
        parts.append(":")
        _write_value(fields[key], parts)
        separator = ","
    parts.append("}")


def _write_value(value: struct_pb2.Value, parts: list[str]) -> None:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        parts.append(repr(json_number(value.number_value)))  # as struct_to_dict reads it
    elif kind == "string_value":
        parts.append(encode_basestring_ascii(value.string_value))
    elif kind == "struct_value":
        _write_object(value.struct_value.fields, parts)
    elif kind == "list_value":
        parts.append("[")
        separator = ""
        for item in value.list_value.values:
            parts.append(separator)
            _write_value(item, parts)
            separator = ","
        parts.append("]")
    elif kind == "bool_value":
        parts.append("true" if value.bool_value else "false")
    else:  # null_value, or no kind at all
        parts.append("null")


def struct_object(message: struct_pb2.Struct, field: str = "input") -> dict[str, Any]:
    """The Struct as the JSON values struct_json writes (whole numbers as integers); a NaN or
    an infinity is the caller's InvalidArgument."""
    try:
        return struct_to_dict(message)
    except ValueError:
        raise _not_json(field) from None


def json_text(value: dict[str, Any], field: str) -> str:
    """struct_json's encoding of struct_object's value."""
    try:
        return _JSON.encode(value)
    except ValueError:
        raise _not_json(field) from None


def _not_json(field: str) -> InvalidArgument:
    return InvalidArgument(f"{field} holds a number JSON cannot (NaN, Infinity)", field=field)


def fill_struct(
    message: struct_pb2.Struct, value: dict[str, Any], levels: int = MAX_NESTING
) -> None:
    """message.update(value), refusing what a client could not decode (Undeliverable)."""
    _fill_object(message, value, levels)


def _fill_object(message: struct_pb2.Struct, value: dict[str, Any], levels: int) -> None:
    fields = message.fields
    for key, item in value.items():
        _fill_value(fields[key], item, levels)


def _fill_value(message: struct_pb2.Value, value: Any, levels: int) -> None:
    if value is None:
        message.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, str):
        message.string_value = value
    elif isinstance(value, bool):
        message.bool_value = value
    elif isinstance(value, int | float):
        try:
            message.number_value = value
        except OverflowError:
            raise Undeliverable(f"a number beyond a double's range ({_digits(value)})") from None
    elif isinstance(value, dict):
        if levels < _OBJECT_LEVELS:
            raise Undeliverable(f"nested deeper than protobuf decodes ({MAX_NESTING} levels)")
        _fill_object(message.struct_value, value, levels - _OBJECT_LEVELS)
    elif isinstance(value, list):
        if levels < _LIST_LEVELS:
            raise Undeliverable(f"nested deeper than protobuf decodes ({MAX_NESTING} levels)")
        items = message.list_value.values
        for item in value:
            _fill_value(items.add(), item, levels - _LIST_LEVELS)
    else:
        raise Undeliverable(f"a value of type {type(value).__name__}")


def _digits(number: float) -> str:
    text = str(number)
    return text if len(text) <= 20 else f"{text[:12]}... ({len(text)} digits)"


def shown_struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    """A stored object as operators read it (GetJob, ListJobs, ...): whole, or, when some part
    of it is Undeliverable, with that part as a string (the number's digits, a too-deep value's
    JSON), so that one odd row does not fail every page that holds it."""
    if value is None:
        return None
    message = struct_pb2.Struct()
    try:
        fill_struct(message, value, _SHOWN_NESTING)
    except Undeliverable:
        message.Clear()
        fill_struct(message, _shown(value, _SHOWN_NESTING), _SHOWN_NESTING)
    return message


def _shown(value: dict[str, Any], levels: int) -> dict[str, Any]:
    return {key: _shown_value(item, levels) for key, item in value.items()}


def _shown_value(value: Any, levels: int) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            return str(value)
        return value
    if isinstance(value, dict):
        if levels < _OBJECT_LEVELS:
            return json.dumps(value)
        return _shown(value, levels - _OBJECT_LEVELS)
    if isinstance(value, list):
        if levels < _LIST_LEVELS:
            return json.dumps(value)
        return [_shown_value(item, levels - _LIST_LEVELS) for item in value]
    return value


def job(row: Row) -> job_pb2.Job:
    """A whole row: what GetJob, ListJobs and the admin calls answer with."""
    history = row.get("errors") or []
    errors = [
        job_pb2.JobError(
            attempt=int(entry.get("attempt") or 0),
            time=timestamp(datetime.fromisoformat(entry["time"])) if entry.get("time") else None,
            code=entry.get("code") or "",
            message=entry.get("message") or "",
        )
        for entry in history
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
        input=shown_struct(row["input"]),
        output=shown_struct(row["output"]),
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
        errors_total=errors_total(history),
        trace_context=row.get("trace_context") or "",
    )


def errors_total(history: list[dict[str, Any]]) -> int:
    """A job's failures over its life: the last entry's `number` (ingestion_job_errors_append,
    migrations/job_queue/fail.sql), or the history's length for entries written without one."""
    number = history[-1].get("number") if history else None
    if isinstance(number, int) and not isinstance(number, bool):
        return min(max(number, len(history)), 2**31 - 1)
    return len(history)


def fill_enqueued(
    job: job_pb2.Job, enqueued: Enqueued, queue: str, priority: int, input_: struct_pb2.Struct
) -> None:
    """A job this call created, whole: the database's answer, and what the caller sent (its
    input, as sent; the rest of a new row is empty or zero)."""
    job.id = enqueued.job_id
    job.queue = queue
    job.status = STATUS_TO_PROTO[enqueued.status]
    job.priority = priority
    job.max_attempts = enqueued.max_attempts
    _set_time(job.run_after, enqueued.run_after)
    job.input.CopyFrom(input_)
    job.idempotency_key = enqueued.idempotency_key
    _set_time(job.created_at, enqueued.created_at)
    job.updated_at.CopyFrom(job.created_at)


# What the rows of one claim have in common, read from a Claimed row in one C call: every field
# but the job's own (id, run_after, input, idempotency_key, created_at, lease, trace_context).
_SHARED = operator.itemgetter(
    *(
        Claimed._fields.index(name)
        for name in (
            "queue",
            "status",
            "priority",
            "attempts",
            "max_attempts",
            "locked_at",
            "locked_by",
            "last_error",
            "error_code",
            "stage",
            "progress",
        )
    )
)


class ClaimedJobs:
    """Fills the jobs of a Claim's answer: every field but output, errors and errors_total
    (ClaimResponse says so).

    The rows of one claim share most of their fields (its queue and worker, the claim's own time
    in four timestamps, the attempt counts of first claims): those are written once, into a
    model job, and each job starts as a copy of it, one C-level copy instead of a dozen field
    writes (the model is written again when a row differs)."""

    def __init__(self) -> None:
        self._model = job_pb2.Job()
        self._shared: tuple[Any, ...] | None = None

    def fill(self, job: job_pb2.Job, claimed: Claimed) -> None:
        """Undeliverable when its input is: the job is then half filled, and the caller drops
        it."""
        shared = _SHARED(claimed)
        if shared != self._shared:
            self._model.Clear()
            _fill_shared(self._model, claimed)
            self._shared = shared
        job.CopyFrom(self._model)
        job.id = str(claimed.id)
        _set_time(job.run_after, claimed.run_after)
        fill_struct(job.input, claimed.input)
        job.idempotency_key = claimed.idempotency_key
        _set_time(job.created_at, claimed.created_at)
        job.lease = claimed.lease
        if claimed.trace_context:
            job.trace_context = claimed.trace_context


def _fill_shared(job: job_pb2.Job, claimed: Claimed) -> None:
    job.queue = claimed.queue
    job.status = STATUS_TO_PROTO[claimed.status]
    job.priority = claimed.priority
    job.attempts = claimed.attempts
    job.max_attempts = claimed.max_attempts
    _set_time(job.locked_at, claimed.locked_at)
    job.locked_by = claimed.locked_by
    job.last_error = claimed.last_error or ""
    job.error_code = claimed.error_code or ""
    job.stage = claimed.stage
    job.progress = claimed.progress
    # The claim writes its own time to all of these (migrations/job_queue/claim.sql).
    job.last_heartbeat_at.CopyFrom(job.locked_at)
    job.processing_started_at.CopyFrom(job.locked_at)
    job.updated_at.CopyFrom(job.locked_at)


def fill_settled(
    job: job_pb2.Job, settled: Settled, output: struct_pb2.Struct | None = None
) -> None:
    """A job after a Complete, Fail or Release: the fields a settle changes or that name the job
    (CompleteResponse says which); a Complete's own output, as sent."""
    assert settled.status is not None, "a settled entry that was found"
    job.id = str(settled.job_id)
    job.queue = settled.queue or ""
    job.status = STATUS_TO_PROTO[settled.status]
    job.attempts = settled.attempts or 0
    job.max_attempts = settled.max_attempts or 0
    job.lease = settled.lease or 0
    job.stage = settled.stage or ""
    job.progress = settled.progress or 0.0
    job.error_code = settled.error_code or ""
    job.last_error = settled.last_error or ""
    job.locked_by = settled.locked_by or ""
    for field, value in (
        (job.run_after, settled.run_after),
        (job.completed_at, settled.completed_at),
        (job.updated_at, settled.updated_at),
    ):
        if value is not None:
            _set_time(field, value)
    if output is not None:
        job.output.CopyFrom(output)


def encode_page_token(row: Row, column: str = "created_at") -> str:
    """Where the next page starts: the row's (column, id), the order its list is in."""
    raw = f"{row[column].isoformat()}|{row['id']}".encode()
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
