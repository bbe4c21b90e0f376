"""The queue service's configuration: read once from the environment, validated at start-up.

A bad value stops the process with one clear line naming the variable, instead of surfacing
later as a confusing runtime error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jobqueue.metrics import listen_address
from jobqueue.settings import ConfigError, Env, mask_url, role_token
from jobqueue.tls import ServerTls

__all__ = ["Config", "ConfigError", "mask_url"]

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_LISTEN = "0.0.0.0:50051"
DEFAULT_METRICS_LISTEN = "0.0.0.0:9101"


@dataclass(frozen=True)
class Config:
    database_url: str = field(repr=False)
    listen: str = DEFAULT_LISTEN
    auth_token: str | None = field(default=None, repr=False)
    # Per-role credentials (queue_service/auth.py); auth_token above holds both roles.
    worker_token: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    # TLS (off when unset); with a client CA, client certificates are required (mutual TLS).
    tls: ServerTls | None = None
    # A RUNNING job whose worker sent no heartbeat for this long is released and retried.
    heartbeat_timeout_seconds: float = 120.0
    # A RUNNING job locked for this long is released even if it heartbeats: the run-time cap.
    lock_timeout_seconds: float = 1800.0
    # How often the reaper releases stale jobs; 0 turns it off.
    stale_sweep_interval_seconds: float = 30.0
    # Exponential backoff of retryable failures: base * 2^(attempt-1), capped, with jitter.
    retry_backoff_base_seconds: float = 10.0
    retry_backoff_max_seconds: float = 3600.0
    # Retention: finished jobs are deleted this long after they finished (0 keeps them). pg-boss
    # deletes finished jobs after 7 days; River deletes completed and cancelled jobs after 24 h
    # and discarded ones (its dead letter) after 7 days. FAILED is the dead letter here, which
    # waits for an operator, so it stays longer.
    retention_succeeded_seconds: float = 7 * 86_400.0
    retention_cancelled_seconds: float = 7 * 86_400.0
    retention_failed_seconds: float = 30 * 86_400.0
    # The audit trail of admin actions (012's admin_audit) keeps an entry this long (0: for
    # ever): longer than the jobs it names, so that "who retried this?" outlives the job.
    retention_audit_seconds: float = 90 * 86_400.0
    # How often the pruner deletes them (in batches of upkeep.PRUNE_BATCH); 0 turns it off.
    retention_sweep_interval_seconds: float = 60.0
    # The workers' HEARTBEAT_INTERVAL_SECONDS: after an outage the stale sweep waits one
    # interval (plus the workers' reconnect backoff) so that their beats land first.
    heartbeat_interval_seconds: float = 5.0
    # ... plus this margin: the workers' reconnect backoff cap (worker_service/heartbeats.py).
    stale_sweep_margin_seconds: float = 5.0
    # The hot path's pool (queue_service/pools.py has every pool and why they are apart).
    pool_min_size: int = 2
    pool_max_size: int = 10
    admin_pool_size: int = 4
    advert_pool_size: int = 4
    # A hot-path statement fails (UNAVAILABLE, retryable) after waiting this long on a row lock,
    # or running this long in all.
    lock_wait_seconds: float = 2.0
    statement_timeout_seconds: float = 10.0
    # Concurrent claim statements; more claimers than this queue up in the service instead of
    # scanning the same index head in the database at once.
    max_concurrent_claims: int = 2
    apply_migrations: bool = True
    # Local sources: when set, a job's local path must lie inside this folder (a relative one is
    # taken inside it); the worker reads the same variable (jobqueue.ingest_input).
    local_media_root: Path | None = None
    # A worker's heartbeat stream that breaks (its process died) releases the jobs last beaten
    # on it after this grace, unless they are beaten again meanwhile; 0 leaves dead workers to
    # the heartbeat timeout alone (queue_service/orphans.py).
    stream_lost_grace_seconds: float = 1.0
    # Where Prometheus scrapes the service (QUEUE_METRICS_LISTEN); None: no metrics endpoint.
    metrics_listen: str | None = None

    @classmethod
    def from_env(cls, values: Mapping[str, str] | None = None) -> Config:
        env = Env(os.environ if values is None else values)
        url = env.raw("DATABASE_URL") or env.raw("SUPABASE_DB_URL") or DEFAULT_DATABASE_URL
        if not re.fullmatch(r"postgres(ql)?://.*", url):
            raise ConfigError("DATABASE_URL must be a postgresql:// URL")
        config = cls(
            database_url=url,
            listen=env.address("QUEUE_LISTEN", DEFAULT_LISTEN),
            auth_token=env.secret("QUEUE_AUTH_TOKEN"),
            worker_token=role_token(env, "QUEUE_WORKER_TOKEN"),
            admin_token=role_token(env, "QUEUE_ADMIN_TOKEN"),
            tls=ServerTls.from_env(env),
            heartbeat_timeout_seconds=env.number("HEARTBEAT_TIMEOUT_SECONDS", 120.0, minimum=1),
            lock_timeout_seconds=env.number("LOCK_TIMEOUT_SECONDS", 1800.0, minimum=1),
            stale_sweep_interval_seconds=env.number(
                "STALE_SWEEP_INTERVAL_SECONDS", 30.0, minimum=0
            ),
            retry_backoff_base_seconds=env.number("RETRY_BACKOFF_BASE_SECONDS", 10.0, minimum=0),
            retry_backoff_max_seconds=env.number("RETRY_BACKOFF_MAX_SECONDS", 3600.0, minimum=0),
            retention_succeeded_seconds=env.number(
                "RETENTION_SUCCEEDED_SECONDS", 7 * 86_400.0, minimum=0
            ),
            retention_cancelled_seconds=env.number(
                "RETENTION_CANCELLED_SECONDS", 7 * 86_400.0, minimum=0
            ),
            retention_failed_seconds=env.number(
                "RETENTION_FAILED_SECONDS", 30 * 86_400.0, minimum=0
            ),
            retention_audit_seconds=env.number("RETENTION_AUDIT_SECONDS", 90 * 86_400.0, minimum=0),
            retention_sweep_interval_seconds=env.number(
                "RETENTION_SWEEP_INTERVAL_SECONDS", 60.0, minimum=0
            ),
            heartbeat_interval_seconds=env.number(
                "HEARTBEAT_INTERVAL_SECONDS", 5.0, minimum=0.1, maximum=60
            ),
            stale_sweep_margin_seconds=env.number("STALE_SWEEP_MARGIN_SECONDS", 5.0, minimum=0),
            pool_min_size=env.whole("DB_POOL_MIN_SIZE", 2, minimum=1),
            pool_max_size=env.whole("DB_POOL_MAX_SIZE", 10, minimum=1),
            admin_pool_size=env.whole("DB_ADMIN_POOL_SIZE", 4, minimum=1),
            advert_pool_size=env.whole("DB_ADVERT_POOL_SIZE", 4, minimum=1),
            lock_wait_seconds=env.number("DB_LOCK_WAIT_SECONDS", 2.0, minimum=0.1),
            statement_timeout_seconds=env.number("DB_STATEMENT_TIMEOUT_SECONDS", 10.0, minimum=0.5),
            max_concurrent_claims=env.whole("MAX_CONCURRENT_CLAIMS", 2, minimum=1),
            apply_migrations=env.boolean("APPLY_MIGRATIONS", True),
            local_media_root=env.directory("LOCAL_MEDIA_ROOT"),
            stream_lost_grace_seconds=env.number("STREAM_LOST_GRACE_SECONDS", 1.0, minimum=0),
            metrics_listen=listen_address(
                os.environ if values is None else values,
                "QUEUE_METRICS_LISTEN",
                DEFAULT_METRICS_LISTEN,
            ),
        )
        if config.worker_token and config.worker_token == config.admin_token:
            raise ConfigError("QUEUE_WORKER_TOKEN and QUEUE_ADMIN_TOKEN must differ")
        if config.pool_max_size < config.pool_min_size:
            raise ConfigError("DB_POOL_MAX_SIZE must be at least DB_POOL_MIN_SIZE")
        return config
