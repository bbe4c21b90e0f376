"""The worker's configuration: flags with environment mirrors, validated once at start-up.

Every flag has an environment variable (a flag wins over its variable), so that a worker runs
the same from a shell, a systemd unit or `docker compose up --scale worker=8`. A bad value stops
the process with one clear line naming the flag and the variable, before anything connects.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_QUEUE_ADDR = "127.0.0.1:50051"
DEFAULT_PIPELINE = "worker_service.pipeline.factory:build_pipeline"

# The queue service releases a job after HEARTBEAT_TIMEOUT_SECONDS (default 120) of silence; a
# worker must beat several times within that, so an interval above this cap is refused.
MAX_HEARTBEAT_INTERVAL_SECONDS = 60.0
# Claim's own upper bound on `wait` (the queue service refuses more).
MAX_POLL_INTERVAL_SECONDS = 60.0
MAX_CONCURRENCY = 1000


class ConfigError(ValueError):
    """A configuration value is malformed; the message names the flag and its variable."""


@dataclass(frozen=True)
class WorkerConfig:
    queue_addr: str = DEFAULT_QUEUE_ADDR
    auth_token: str | None = None
    worker_id: str = ""
    queue: str = "default"
    pipeline: str = DEFAULT_PIPELINE
    once: bool = False
    # 0: no limit (run until stopped).
    limit: int = 0
    # How long an idle worker's Claim waits for work before asking again.
    poll_interval_seconds: float = 5.0
    concurrency: int = 1
    heartbeat_interval_seconds: float = 5.0
    # On SIGTERM, in-flight jobs get this long to finish before they are handed back.
    shutdown_grace_seconds: float = 30.0
    # Deadline of every unary call (Claim adds its wait on top).
    rpc_timeout_seconds: float = 10.0
    # Start-up retries an unreachable queue service for this long before giving up.
    connect_timeout_seconds: float = 10.0


# (flag destination, environment variable, flag spelling): the one table of mirrors.
ENV_MIRRORS: tuple[tuple[str, str, str], ...] = (
    ("queue_addr", "QUEUE_ADDR", "--queue-addr"),
    ("worker_id", "WORKER_ID", "--worker-id"),
    ("queue", "WORKER_QUEUE", "--queue"),
    ("pipeline", "WORKER_PIPELINE", "--pipeline"),
    ("once", "WORKER_ONCE", "--once"),
    ("limit", "WORKER_LIMIT", "--limit"),
    ("poll_interval_seconds", "WORKER_POLL_INTERVAL", "--poll-interval"),
    ("concurrency", "WORKER_CONCURRENCY", "--concurrency"),
    ("heartbeat_interval_seconds", "HEARTBEAT_INTERVAL_SECONDS", "--heartbeat-interval"),
    ("shutdown_grace_seconds", "WORKER_SHUTDOWN_GRACE_SECONDS", "--shutdown-grace"),
    ("rpc_timeout_seconds", "WORKER_RPC_TIMEOUT_SECONDS", "--rpc-timeout"),
    ("connect_timeout_seconds", "WORKER_CONNECT_TIMEOUT_SECONDS", "--connect-timeout"),
)


def default_worker_id() -> str:
    """hostname-pid-random: unique per process, and readable in `locked_by`."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def resolve(flags: Mapping[str, object], env: Mapping[str, str]) -> WorkerConfig:
    """Merge flags (None when not given) over their environment mirrors, then validate."""
    values: dict[str, str] = {}
    for dest, variable, _flag in ENV_MIRRORS:
        given = flags.get(dest)
        if given is not None and given is not False:
            values[dest] = str(given)
        elif env.get(variable, "") != "":
            values[dest] = env[variable]
    defaults = WorkerConfig()
    config = WorkerConfig(
        queue_addr=values.get("queue_addr", defaults.queue_addr).strip(),
        auth_token=env.get("QUEUE_AUTH_TOKEN") or None,
        worker_id=values.get("worker_id", "").strip() or default_worker_id(),
        queue=values.get("queue", defaults.queue).strip(),
        pipeline=values.get("pipeline", defaults.pipeline).strip(),
        once=_boolean(values, "once", defaults.once),
        limit=int(_number(values, "limit", defaults.limit, minimum=0, integer=True)),
        poll_interval_seconds=_number(
            values,
            "poll_interval_seconds",
            defaults.poll_interval_seconds,
            minimum=0,
            maximum=MAX_POLL_INTERVAL_SECONDS,
        ),
        concurrency=int(
            _number(
                values,
                "concurrency",
                defaults.concurrency,
                minimum=1,
                maximum=MAX_CONCURRENCY,
                integer=True,
            )
        ),
        heartbeat_interval_seconds=_number(
            values,
            "heartbeat_interval_seconds",
            defaults.heartbeat_interval_seconds,
            minimum=0.05,
            maximum=MAX_HEARTBEAT_INTERVAL_SECONDS,
        ),
        shutdown_grace_seconds=_number(
            values, "shutdown_grace_seconds", defaults.shutdown_grace_seconds, minimum=0
        ),
        rpc_timeout_seconds=_number(
            values, "rpc_timeout_seconds", defaults.rpc_timeout_seconds, minimum=0.1
        ),
        connect_timeout_seconds=_number(
            values, "connect_timeout_seconds", defaults.connect_timeout_seconds, minimum=0
        ),
    )
    if not re.fullmatch(r"[^\s:/]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", config.queue_addr):
        raise ConfigError(f"{_names('queue_addr')} must be HOST:PORT, got {config.queue_addr!r}")
    if not config.worker_id or len(config.worker_id) > 200 or re.search(r"\s", config.worker_id):
        raise ConfigError(f"{_names('worker_id')} must be 1..200 characters without spaces")
    if not config.queue or len(config.queue) > 100:
        raise ConfigError(f"{_names('queue')} must be 1..100 characters")
    if not re.fullmatch(r"[\w.]+:[\w.]+", config.pipeline):
        raise ConfigError(f"{_names('pipeline')} must be module:callable, got {config.pipeline!r}")
    return config


def _names(dest: str) -> str:
    for known, variable, flag in ENV_MIRRORS:
        if known == dest:
            return f"{flag} ({variable})"
    raise KeyError(dest)


def _number(
    values: Mapping[str, str],
    dest: str,
    default: float,
    *,
    minimum: float,
    maximum: float | None = None,
    integer: bool = False,
) -> float:
    raw = values.get(dest)
    if raw is None:
        return default
    kind = "a whole number" if integer else "a number"
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        raise ConfigError(f"{_names(dest)} must be {kind}, got {raw!r}") from None
    if value != value or value < minimum:  # NaN compares unequal to itself
        raise ConfigError(f"{_names(dest)} must be at least {minimum:g}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{_names(dest)} must be at most {maximum:g}, got {raw!r}")
    return value


def _boolean(values: Mapping[str, str], dest: str, default: bool) -> bool:
    raw = values.get(dest)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{_names(dest)} must be true or false, got {raw!r}")
