"""What every client of the wire contract shares, beside the generated stubs.

The gateway, the worker and the pipeline's advert sink all talk to the queue service through
this module, and none of them imports `queue_service`: a client depends on the contract, never on
the server's package. Here live the bearer metadata, the channel options, the ErrorInfo decoding
(clients read a status code and a reason, never a message), the codes after which a call may be
made again, and the conversions between protobuf's well-known types and Python values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from jobqueue import tracing
from jobqueue.tls import ClientTls

# The ErrorInfo domain of every error the queue service raises.
ERROR_DOMAIN = "jobqueue.v1"

# Codes after which the same call may simply be made again: nothing changed, or a lease fences a
# repeat. INTERNAL is not here: it means a bug, and repeating it would hide it.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# The credential was refused: waiting or repeating cannot fix it.
AUTH_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})

# A page of 500 jobs with large outputs, or an advert whose chunks carry 1,536-float vectors,
# exceeds gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    # A worker's heartbeat stream lives for hours: keepalive pings find a dead peer (a host that
    # vanished without a RST) within ~30 s. The server permits pings every 10 s.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # After a queue service restart, reconnect within a second or two, not gRPC's default of up
    # to two minutes: clients answer UNAVAILABLE (a 503 at the gateway) meanwhile.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def open_channel(target: str, tls: ClientTls | None = None) -> grpc.aio.Channel:
    """An asyncio channel to the queue service (gateway, worker); TLS when `tls` is given. With
    tracing on, its calls carry the caller's trace context (jobqueue/tracing.py)."""
    interceptors = tracing.client_interceptors()
    if tls is not None:
        options = [*CHANNEL_OPTIONS, *tls.options()]
        return grpc.aio.secure_channel(
            target, tls.credentials(), options=options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)


def open_blocking_channel(target: str, tls: ClientTls | None = None) -> grpc.Channel:
    """A blocking channel, for code that runs in a thread of its own (the pipeline's stages)."""
    if tls is not None:
        options = [*CHANNEL_OPTIONS, *tls.options()]
        channel = grpc.secure_channel(target, tls.credentials(), options=options)
    else:
        channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    interceptors = tracing.blocking_client_interceptors()
    return grpc.intercept_channel(channel, *interceptors) if interceptors else channel


# Who is behind an admin call, as a trusted client (the gateway) knows it: recorded by the audit
# trail of admin actions beside the role that the credential proves.
OPERATOR_METADATA = "x-jobqueue-operator"


def bearer_metadata(token: str | None, operator: str | None = None) -> tuple[tuple[str, str], ...]:
    """What a client sends: the bearer token when one is configured, and the operator behind
    the call (recorded by the audit trail of admin actions) when one is known."""
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
    if operator:
        metadata += ((OPERATOR_METADATA, operator),)
    return metadata


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The google.rpc.ErrorInfo attached to a failed call, if any."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # details that do not match the code and message: not our server
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def error_reason(error: grpc.RpcError) -> str | None:
    """The ErrorInfo reason of a failed call (`LEASE_LOST`, `JOB_NOT_FOUND`, ...), if any."""
    info = error_info(error)
    return info.reason if info is not None else None


def status_code(error: grpc.RpcError) -> grpc.StatusCode:
    """The call's status code; UNKNOWN for an RpcError that carries none.

    Blocking calls raise errors that are `grpc.Call`s, asyncio calls `AioRpcError`s, which are
    not: both have `code()` and `details()`.
    """
    code = getattr(error, "code", None)
    return code() if callable(code) else grpc.StatusCode.UNKNOWN


def describe(error: grpc.RpcError) -> str:
    """`UNAVAILABLE: details`, first line only: enough for an operator, never a stack trace."""
    details = getattr(error, "details", None)
    text = (details() if callable(details) else str(error)) or ""
    lines = text.strip().splitlines()
    return f"{status_code(error).name}: {lines[0] if lines else 'no details'}"


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(int(seconds * 1e9))
    return message


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def to_datetime(message: Any, field: str) -> datetime | None:
    """A Timestamp field as an aware datetime, None when the field is unset."""
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    return value.ToDatetime(tzinfo=UTC)


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    message = struct_pb2.Struct()
    message.update(dict(value))
    return message


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    """The Struct as JSON values. Struct carries every number as a double; whole numbers come
    back as ints, so {"n": 3} stores as 3 (not 3.0) and hashes to the same idempotency key as
    the same input enqueued from psql. A NaN or an infinity raises ValueError (JSON has none).

    What json_format.MessageToDict makes of the message, whole numbers turned into ints, read by
    a direct walk of the message: a third of the cost of that detour for a job's input."""
    fields = message.fields  # (by key: a little cheaper than .items() on this map)
    return {key: _value(fields[key]) for key in fields}


# Doubles represent every integer below 2**53 exactly; past it a "whole" double is a rounding.
_MAX_EXACT_INTEGER = 2**53


def json_number(number: float) -> int | float:
    """A Struct's number as JSON holds it: a whole number below 2**53 as an int, any other finite
    one as itself; a NaN or an infinity raises ValueError (JSON has none)."""
    if number.is_integer():
        return int(number) if abs(number) < _MAX_EXACT_INTEGER else number
    if not math.isfinite(number):
        raise ValueError(f"a Struct holds {number}, which JSON cannot")
    return number


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return json_number(value.number_value)
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        fields = value.struct_value.fields
        return {key: _value(fields[key]) for key in fields}
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None  # null_value, or no kind at all
