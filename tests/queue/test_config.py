"""The queue service's configuration: its defaults, and a bad value stops it at start-up, named."""

from __future__ import annotations

import pytest

from queue_service.config import Config, ConfigError


def test_defaults() -> None:
    config = Config.from_env({})
    assert config.listen == "0.0.0.0:50051"
    assert config.auth_token is None
    assert (config.heartbeat_timeout_seconds, config.lock_timeout_seconds) == (120, 1800)
    # A dead worker's broken heartbeat stream releases its jobs a second later.
    assert config.stream_lost_grace_seconds == 1.0


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
        ({"STREAM_LOST_GRACE_SECONDS": "-1"}, "STREAM_LOST_GRACE_SECONDS"),
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
