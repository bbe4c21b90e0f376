"""The clients' seam beside the stubs (jobqueue.rpc): what every client and the server share."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2

from jobqueue.rpc import struct_to_dict


def test_struct_numbers_keep_their_json_form() -> None:
    message = struct_pb2.Struct()
    message.update({"n": 3, "ratio": 0.5, "nested": {"items": [1, 2.5, "x", None, True]}})
    assert struct_to_dict(message) == {
        "n": 3,
        "ratio": 0.5,
        "nested": {"items": [1, 2.5, "x", None, True]},
    }
    assert isinstance(struct_to_dict(message)["n"], int)


def reference(message: struct_pb2.Struct) -> Any:
    """What struct_to_dict answered before its direct walk: json_format, then whole numbers
    below 2**53 as ints."""

    def whole(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        if isinstance(value, dict):
            return {key: whole(item) for key, item in value.items()}
        if isinstance(value, list):
            return [whole(item) for item in value]
        return value

    return whole(json_format.MessageToDict(message))


def typed(value: Any) -> Any:
    """The value with each number's type beside it: 3 and 3.0 compare different."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


VALUES: list[dict[str, Any]] = [
    {},
    {"source_type": "s3", "s3_key": "videos/a.mp4"},
    {"n": 3, "half": 0.5, "negative": -7, "zero": 0, "minus_zero": -0.0},
    {"limit": float(2**53 - 1), "past": 2.0**53, "far": -(2.0**60), "tiny": 1e-300, "huge": 1e300},
    {"flags": [True, False, None], "nested": {"deeper": {"list": [1, "two", {"three": 3.0}]}}},
    {"lists": [[], [[1.5, [2]]], [{"a": []}]], "empty_object": {}, "empty_string": ""},
    {"unicode": "café ☕ \U0001f3ac", "quotes": 'say "hi"\\', "control": "tab\tnew\nline"},
]


@pytest.mark.parametrize("value", VALUES)
def test_struct_to_dict_reads_what_json_format_reads(value: dict[str, Any]) -> None:
    message = struct_pb2.Struct()
    message.update(value)
    assert typed(struct_to_dict(message)) == typed(reference(message))
    # And it is JSON: what the database stores and the gateway answers.
    assert json.loads(json.dumps(struct_to_dict(message), allow_nan=False)) == reference(message)


def test_a_value_with_no_kind_reads_as_null() -> None:
    message = struct_pb2.Struct()
    message.fields["unset"].SetInParent()  # a Value whose oneof is empty
    message.fields["list"].list_value.values.add()
    assert struct_to_dict(message) == reference(message) == {"unset": None, "list": [None]}


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_numbers_json_cannot_hold_are_refused(number: float) -> None:
    for value in ({"n": number}, {"deep": {"list": [1, number]}}):
        message = struct_pb2.Struct()
        message.update(value)
        with pytest.raises(ValueError):
            reference(message)
        with pytest.raises(ValueError):
            struct_to_dict(message)
