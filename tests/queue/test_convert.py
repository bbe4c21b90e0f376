"""The queue service's fast conversions write what the contract's helpers (jobqueue.rpc) write,
which every client reads with: a Struct's JSON, a timestamp."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import struct_pb2

from jobqueue import rpc
from queue_service import convert
from queue_service.errors import InvalidArgument

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


def test_whole_numbers_are_written_as_integers() -> None:
    # As jsonb stores {"n": 3} from psql: the same text, so the same idempotency key.
    assert convert.struct_json(message({"n": 3}), "input") == '{"n":3}'
    assert convert.struct_json(message({"x": 2.5}), "input") == '{"x":2.5}'


def test_struct_json_refuses_what_json_cannot_hold() -> None:
    struct = struct_pb2.Struct()
    struct["n"] = float("nan")
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
