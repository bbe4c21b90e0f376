"""Configuration is validated at start-up; secrets never reach output."""

from __future__ import annotations

import pytest

from queue_service.config import Config, ConfigError, mask_url
from queue_service.convert import decode_page_token, encode_page_token
from queue_service.errors import InvalidArgument


def test_defaults() -> None:
    config = Config.from_env({})
    assert config.listen == "0.0.0.0:50051"
    assert config.auth_token is None
    assert (config.heartbeat_timeout_seconds, config.lock_timeout_seconds) == (120, 1800)


def test_supabase_url_is_accepted_as_the_database() -> None:
    assert (
        Config.from_env({"SUPABASE_DB_URL": "postgresql://a@b/c"}).database_url
        == "postgresql://a@b/c"
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HEARTBEAT_TIMEOUT_SECONDS": "soon"}, "HEARTBEAT_TIMEOUT_SECONDS"),
        ({"STALE_SWEEP_INTERVAL_SECONDS": "-1"}, "STALE_SWEEP_INTERVAL_SECONDS"),
        ({"LOCK_TIMEOUT_SECONDS": "inf"}, "LOCK_TIMEOUT_SECONDS"),
        ({"HEARTBEAT_TIMEOUT_SECONDS": "nan"}, "HEARTBEAT_TIMEOUT_SECONDS"),
        ({"QUEUE_LISTEN": "50051"}, "QUEUE_LISTEN"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"DB_POOL_MIN_SIZE": "5", "DB_POOL_MAX_SIZE": "2"}, "DB_POOL_MAX_SIZE"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Config.from_env(env)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:hunter2@db:5432/app", "postgresql://user:***@db:5432/app"),
        ("postgresql://user@db/app", "postgresql://user@db/app"),
        ("postgres://u:p%40ss@h/d?sslmode=require", "postgres://u:***@h/d?sslmode=require"),
        ("postgresql://:secret@h/d", "postgresql://:***@h/d"),
        (
            "postgresql:///d?host=/run&password=hunter2&port=5",
            "postgresql:///d?host=/run&password=***&port=5",
        ),
    ],
)
def test_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    from datetime import UTC, datetime
    from uuid import uuid4

    row = {"created_at": datetime(2026, 11, 30, 12, 0, 1, 5, tzinfo=UTC), "id": uuid4()}
    assert decode_page_token(encode_page_token(row)) == (row["created_at"], row["id"])
    with pytest.raises(InvalidArgument):
        decode_page_token("not a token")


def test_struct_numbers_keep_their_json_form() -> None:
    from google.protobuf import struct_pb2

    from queue_service.convert import struct_to_dict

    message = struct_pb2.Struct()
    message.update({"n": 3, "ratio": 0.5, "nested": {"items": [1, 2.5, "x", None, True]}})
    assert struct_to_dict(message) == {
        "n": 3,
        "ratio": 0.5,
        "nested": {"items": [1, 2.5, "x", None, True]},
    }
    assert isinstance(struct_to_dict(message)["n"], int)
