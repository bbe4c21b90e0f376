"""The queue service's configuration: its defaults, and a bad value stops it at start-up, named."""

from __future__ import annotations

import pytest

from queue_service.config import Config, ConfigError


def test_defaults() -> None:
    config = Config.from_env({})
    assert config.listen == "0.0.0.0:50051"
    assert config.auth_token is None
    assert (config.heartbeat_timeout_seconds, config.lock_timeout_seconds) == (120, 1800)
    # Each class of call has its own pool; the hot path's statements time out.
    assert (config.pool_min_size, config.pool_max_size) == (2, 10)
    assert (config.admin_pool_size, config.advert_pool_size) == (4, 4)
    assert (config.lock_wait_seconds, config.statement_timeout_seconds) == (2, 10)
    # After an outage the sweep waits the workers' interval plus their reconnect backoff.
    assert (config.heartbeat_interval_seconds, config.stale_sweep_margin_seconds) == (5, 5)
    # A dead worker's broken heartbeat stream releases its jobs a second later.
    assert config.stream_lost_grace_seconds == 1.0


def test_retention_keeps_finished_jobs_a_week_failed_ones_a_month_and_the_audit_ninety_days() -> (
    None
):
    config = Config.from_env({})
    day = 86_400
    assert (
        config.retention_succeeded_seconds,
        config.retention_cancelled_seconds,
        config.retention_failed_seconds,
        config.retention_audit_seconds,
        config.retention_sweep_interval_seconds,
    ) == (7 * day, 7 * day, 30 * day, 90 * day, 60)
    kept = Config.from_env({"RETENTION_FAILED_SECONDS": "0", "RETENTION_AUDIT_SECONDS": "0"})
    assert kept.retention_failed_seconds == 0  # FAILED jobs are never deleted
    assert kept.retention_audit_seconds == 0  # nor audit entries


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
        ({"RETENTION_SUCCEEDED_SECONDS": "-1"}, "RETENTION_SUCCEEDED_SECONDS"),
        ({"RETENTION_FAILED_SECONDS": "a month"}, "RETENTION_FAILED_SECONDS"),
        ({"RETENTION_SWEEP_INTERVAL_SECONDS": "inf"}, "RETENTION_SWEEP_INTERVAL_SECONDS"),
        ({"DB_ADMIN_POOL_SIZE": "0"}, "DB_ADMIN_POOL_SIZE"),
        ({"DB_ADVERT_POOL_SIZE": "many"}, "DB_ADVERT_POOL_SIZE"),
        ({"DB_LOCK_WAIT_SECONDS": "0"}, "DB_LOCK_WAIT_SECONDS"),
        ({"DB_STATEMENT_TIMEOUT_SECONDS": "nan"}, "DB_STATEMENT_TIMEOUT_SECONDS"),
        ({"HEARTBEAT_INTERVAL_SECONDS": "61"}, "HEARTBEAT_INTERVAL_SECONDS"),
        ({"STALE_SWEEP_MARGIN_SECONDS": "-1"}, "STALE_SWEEP_MARGIN_SECONDS"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Config.from_env(env)
