"""The queue service's fast conversions write what the contract's helpers (jobqueue.rpc) write,
which every client reads with: a Struct's JSON, a timestamp."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from jobqueue import rpc
from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import job_pb2
from jobqueue.v1 import queue_service_pb2 as queue_pb
from queue_service import convert
from queue_service.errors import InvalidArgument
from queue_service.store import Claimed

VALUES: list[dict[str, Any]] = [
    {"source_type": "s3", "s3_key": "videos/a.mp4"},
    {"n": 3, "half": 0.5, "negative": -7, "zero": 0, "minus_zero": -0.0, "big": 2**53 + 2.0},
    {"exact_limit": float(2**53 - 1), "tiny": 1e-300, "huge": 1.5e300},
    {"flags": [True, False, None], "nested": {"deeper": {"list": [1, "two", {"three": 3.0}]}}},
    {"empty_object": {}, "empty_list": [], "empty_string": ""},
    {"unicode": "café ☕ \U0001f3ac", "quotes": 'say "hi"\\', "control": "tab\tnew\nline"},
]


def message(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


@pytest.mark.parametrize("value", VALUES)
def test_struct_json_is_the_json_of_the_contracts_reading(value: dict[str, Any]) -> None:
    struct = message(value)
    text = convert.struct_json(struct, "input")
    assert json.loads(text) == rpc.struct_to_dict(struct)
    assert text.isascii()  # its length is its size in bytes


@pytest.mark.parametrize(
    "value",
    [
        *VALUES,
        {"limits": [2**53 - 1, -(2**53 - 1), float(2**53), -float(2**53), 1e16, 1e300]},
        {"fractions": [1e-7, -2.5, 0.1, 123456789.125, 1.7962061367738597e9]},
        {"text": ["\x00", "\u2028", "\U0001f3ac", '\\/"', "\x7f\x1f"], "": {"": None}},
        {"lists": [[], [[]], [{}], [None, True, 0, "", {"a": [1.5]}]]},
        {},
    ],
)
def test_struct_json_is_the_text_json_dumps_writes(value: dict[str, Any]) -> None:
    # The walk writes JSON itself: character for character what the encoder made of the dict.
    struct = message(value)
    expected = json.dumps(rpc.struct_to_dict(struct), separators=(",", ":"), allow_nan=False)
    assert convert.struct_json(struct, "output") == expected


def test_whole_numbers_are_written_as_integers() -> None:
    # As jsonb stores {"n": 3} from psql: the same text, so the same idempotency key.
    assert convert.struct_json(message({"n": 3}), "input") == '{"n":3}'
    assert convert.struct_json(message({"x": 2.5}), "input") == '{"x":2.5}'


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_struct_json_refuses_what_json_cannot_hold(number: float) -> None:
    struct = struct_pb2.Struct()
    struct["n"] = number
    with pytest.raises(InvalidArgument):
        convert.struct_json(struct, "output")
    struct["n"] = {"deeper": [1, number]}
    with pytest.raises(InvalidArgument):
        convert.struct_json(struct, "output")


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=-7))),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_timestamp_is_the_contracts_timestamp(value: datetime) -> None:
    assert convert.timestamp(value) == rpc.timestamp(value)


def nested(objects: int, lists: int) -> Any:
    value: Any = 1
    for _ in range(lists):
        value = [value]
    for _ in range(objects):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("objects", "lists"), [(32, 0), (0, 48), (20, 18), (31, 1)])
def test_a_claimed_input_as_deep_as_protobuf_decodes_is_delivered(objects: int, lists: int) -> None:
    response = queue_pb.ClaimResponse()
    convert.fill_struct(response.jobs.add().input, {"x": nested(objects, lists)})
    decoded = queue_pb.ClaimResponse.FromString(response.SerializeToString())
    assert rpc.struct_to_dict(decoded.jobs[0].input) == {"x": nested(objects, lists)}


@pytest.mark.parametrize(("objects", "lists"), [(33, 0), (0, 49), (31, 2)])
def test_one_level_deeper_is_undeliverable_as_the_client_would_find(
    objects: int, lists: int
) -> None:
    response = queue_pb.ClaimResponse()
    response.jobs.add().input.update({"x": nested(objects, lists)})
    with pytest.raises(DecodeError):  # what the worker's client would meet
        queue_pb.ClaimResponse.FromString(response.SerializeToString())
    with pytest.raises(convert.Undeliverable, match="nested deeper"):
        convert.fill_struct(
            queue_pb.ClaimResponse().jobs.add().input, {"x": nested(objects, lists)}
        )


def test_a_number_beyond_a_double_is_undeliverable() -> None:
    # jsonb keeps {"frames": 1e400} exactly; it reads back as a 401-digit integer.
    with pytest.raises(convert.Undeliverable, match="beyond a double's range"):
        convert.fill_struct(struct_pb2.Struct(), {"frames": 10**400})


def test_a_shown_job_turns_what_cannot_be_delivered_into_strings() -> None:
    value = {"frames": 10**400, "ok": 2, "deep": nested(40, 0), "list": [10**400, "x"]}
    shown = convert.shown_struct(value)
    assert shown is not None
    response = admin_pb.ListRunningJobsResponse()
    response.jobs.add().job.input.CopyFrom(shown)
    decoded = admin_pb.ListRunningJobsResponse.FromString(response.SerializeToString())
    readable = rpc.struct_to_dict(decoded.jobs[0].job.input)
    assert readable["frames"] == str(10**400)
    assert readable["list"] == [str(10**400), "x"]
    assert readable["ok"] == 2
    # The part too deep to decode is its JSON text, at the depth where it stopped fitting.
    level, kept = readable["deep"], 0
    while isinstance(level, dict):
        level, kept = level["a"], kept + 1
    rest = json.loads(level)
    assert rest == nested(40 - kept, 0) and kept > 20
    assert convert.shown_struct({"n": 3}) == convert.struct({"n": 3})


def claimed(**fields: Any) -> Claimed:
    now = datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC)
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "queue": "default",
        "status": "RUNNING",
        "priority": 0,
        "attempts": 1,
        "max_attempts": 3,
        "run_after": now - timedelta(seconds=5),
        "locked_at": now,
        "locked_by": "worker-1",
        "input": {"source_type": "s3", "s3_key": "videos/a.mp4"},
        "idempotency_key": uuid.uuid4().hex,
        "last_error": None,
        "error_code": None,
        "stage": "",
        "progress": 0.0,
        "created_at": now - timedelta(seconds=9),
        "lease": 7,
        "trace_context": None,
    }
    return Claimed(**{**row, **fields})


def claimed_by_the_contract(row: Claimed) -> job_pb2.Job:
    """What ClaimResponse documents, written field by field with the contract's helpers."""
    return job_pb2.Job(
        id=str(row.id),
        queue=row.queue,
        status=convert.STATUS_TO_PROTO[row.status],
        priority=row.priority,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        run_after=rpc.timestamp(row.run_after),
        locked_at=rpc.timestamp(row.locked_at),
        locked_by=row.locked_by,
        input=rpc.struct(row.input),
        idempotency_key=row.idempotency_key,
        last_error=row.last_error or "",
        error_code=row.error_code or "",
        stage=row.stage,
        progress=row.progress,
        last_heartbeat_at=rpc.timestamp(row.locked_at),
        processing_started_at=rpc.timestamp(row.locked_at),
        updated_at=rpc.timestamp(row.locked_at),
        created_at=rpc.timestamp(row.created_at),
        lease=row.lease,
        trace_context=row.trace_context or "",
    )


def test_each_claimed_job_is_its_own_row_though_the_rows_share_a_model() -> None:
    later = datetime(2026, 12, 2, 10, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    rows = [
        claimed(),
        claimed(trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        claimed(attempts=2, last_error="boom", error_code="TIMEOUT", stage="fetch", progress=0.5),
        claimed(),
        claimed(queue="other", priority=-3, max_attempts=9, locked_by="worker-2", locked_at=later),
        claimed(status="RUNNING", input={"n": 3, "deep": {"list": [1.5, None, True]}}),
    ]
    response = queue_pb.ClaimResponse()
    jobs = convert.ClaimedJobs()
    for row in rows:
        jobs.fill(response.jobs.add(), row)
    assert list(response.jobs) == [claimed_by_the_contract(row) for row in rows]


def test_a_claimed_job_whose_input_is_undeliverable_leaves_the_next_whole() -> None:
    rows = [claimed(input={"frames": 10**400}), claimed()]
    jobs = convert.ClaimedJobs()
    with pytest.raises(convert.Undeliverable):
        jobs.fill(job_pb2.Job(), rows[0])
    job = job_pb2.Job()
    jobs.fill(job, rows[1])
    assert job == claimed_by_the_contract(rows[1])
