"""List pages: the page token the queue service hands out is opaque to clients but reads back
exactly, and a token it did not make is a bad argument, not a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from queue_service.convert import decode_page_token, encode_page_token
from queue_service.errors import InvalidArgument


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    row = {"created_at": datetime(2026, 11, 30, 12, 0, 1, 5, tzinfo=UTC), "id": uuid4()}
    assert decode_page_token(encode_page_token(row)) == (row["created_at"], row["id"])
    with pytest.raises(InvalidArgument):
        decode_page_token("not a token")
