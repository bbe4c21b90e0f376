"""The queue service's configuration: read once from the environment, validated at start-up.

A bad value stops the process with one clear line naming the variable, instead of surfacing
later as a confusing runtime error.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Config:
    database_url: str
    listen: str = "0.0.0.0:50051"
    auth_token: str | None = None
    # A RUNNING job whose worker sent no heartbeat for this long is released and retried.
    heartbeat_timeout_seconds: float = 120.0
    # A RUNNING job locked for this long is released even if it heartbeats: the run-time cap.
    lock_timeout_seconds: float = 1800.0
    # How often the reaper releases stale jobs; 0 turns it off.
    stale_sweep_interval_seconds: float = 30.0
    # Exponential backoff of retryable failures: base * 2^(attempt-1), capped, with jitter.
    retry_backoff_base_seconds: float = 10.0
    retry_backoff_max_seconds: float = 3600.0
    pool_min_size: int = 2
    pool_max_size: int = 10
    # Concurrent claim statements; more claimers than this queue up in the service instead of
    # scanning the same index head in the database at once.
    max_concurrent_claims: int = 2
    apply_migrations: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        url = env.get("DATABASE_URL") or env.get("SUPABASE_DB_URL") or DEFAULT_DATABASE_URL
        config = cls(
            database_url=url,
            listen=env.get("QUEUE_LISTEN", cls.listen),
            auth_token=env.get("QUEUE_AUTH_TOKEN") or None,
            heartbeat_timeout_seconds=_number(env, "HEARTBEAT_TIMEOUT_SECONDS", 120.0, minimum=1),
            lock_timeout_seconds=_number(env, "LOCK_TIMEOUT_SECONDS", 1800.0, minimum=1),
            stale_sweep_interval_seconds=_number(
                env, "STALE_SWEEP_INTERVAL_SECONDS", 30.0, minimum=0
            ),
            retry_backoff_base_seconds=_number(env, "RETRY_BACKOFF_BASE_SECONDS", 10.0, minimum=0),
            retry_backoff_max_seconds=_number(env, "RETRY_BACKOFF_MAX_SECONDS", 3600.0, minimum=0),
            pool_min_size=int(_number(env, "DB_POOL_MIN_SIZE", 2, minimum=1)),
            pool_max_size=int(_number(env, "DB_POOL_MAX_SIZE", 10, minimum=1)),
            max_concurrent_claims=int(_number(env, "MAX_CONCURRENT_CLAIMS", 2, minimum=1)),
            apply_migrations=env.get("APPLY_MIGRATIONS", "1").lower() not in ("0", "false", "no"),
        )
        if not re.fullmatch(r"postgres(ql)?://.*", config.database_url):
            raise ConfigError("DATABASE_URL must be a postgresql:// URL")
        if not re.fullmatch(r"[^\s:]*:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", config.listen):
            raise ConfigError(f"QUEUE_LISTEN must be HOST:PORT, got {config.listen!r}")
        if config.pool_max_size < config.pool_min_size:
            raise ConfigError("DB_POOL_MAX_SIZE must be at least DB_POOL_MIN_SIZE")
        return config


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and output lines: the one in the
    authority (user:password@) and a `password=` query parameter."""
    masked = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", masked)
