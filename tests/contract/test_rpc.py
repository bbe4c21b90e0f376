"""The clients' seam beside the stubs (jobqueue.rpc): what every client and the server share."""

from __future__ import annotations

from google.protobuf import struct_pb2

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
