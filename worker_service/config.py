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
from dataclasses import dataclass, field

from jobqueue import limits
from jobqueue.settings import Env, role_token
from jobqueue.tls import ClientTls

DEFAULT_QUEUE_ADDR = "127.0.0.1:50051"
DEFAULT_PIPELINE = "worker_service.pipeline.factory:build_pipeline"

# The queue service releases a job after HEARTBEAT_TIMEOUT_SECONDS (default 120) of silence; a
# worker must beat several times within that, so an interval above this cap is refused.
MAX_HEARTBEAT_INTERVAL_SECONDS = 60.0
# Claim's own upper bound on `wait` (the queue service refuses more).
MAX_POLL_INTERVAL_SECONDS = 60.0
MAX_CONCURRENCY = 1000


@dataclass(frozen=True)
class WorkerConfig:
    queue_addr: str = DEFAULT_QUEUE_ADDR
    # QUEUE_WORKER_TOKEN, else QUEUE_AUTH_TOKEN: the worker role's credential.
    auth_token: str | None = field(default=None, repr=False)
    # QUEUE_ADMIN_TOKEN, else QUEUE_AUTH_TOKEN: for the operator commands (--release-stale,
    # --show-running), which call AdminService.
    admin_token: str | None = field(default=None, repr=False)
    tls: ClientTls | None = None
    # The variables the two tokens came from, for the refusal messages.
    token_source: str = "QUEUE_AUTH_TOKEN"
    admin_token_source: str = "QUEUE_AUTH_TOKEN"
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
    # A job none of whose heartbeats was acknowledged for this long is stopped and never
    # completed: by then the queue service (whose HEARTBEAT_TIMEOUT_SECONDS this must match) may
    # have released it to another worker.
    heartbeat_timeout_seconds: float = 120.0
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
    ("heartbeat_timeout_seconds", "HEARTBEAT_TIMEOUT_SECONDS", "--heartbeat-timeout"),
    ("shutdown_grace_seconds", "WORKER_SHUTDOWN_GRACE_SECONDS", "--shutdown-grace"),
    ("rpc_timeout_seconds", "WORKER_RPC_TIMEOUT_SECONDS", "--rpc-timeout"),
    ("connect_timeout_seconds", "WORKER_CONNECT_TIMEOUT_SECONDS", "--connect-timeout"),
)


# Read from the environment only (no flag): credentials and TLS files.
PASSED_THROUGH = (
    "QUEUE_AUTH_TOKEN",
    "QUEUE_WORKER_TOKEN",
    "QUEUE_ADMIN_TOKEN",
    "QUEUE_TLS_CA_FILE",
    "QUEUE_TLS_CLIENT_CERT_FILE",
    "QUEUE_TLS_CLIENT_KEY_FILE",
    "QUEUE_TLS_SERVER_NAME",
)


def default_worker_id() -> str:
    """hostname-pid-random: unique per process, and readable in `locked_by`."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def resolve(flags: Mapping[str, object], env: Mapping[str, str]) -> WorkerConfig:
    """Merge flags (None when not given) over their environment mirrors, then validate.

    Raises `ConfigError` naming the flag and its variable: `--limit (WORKER_LIMIT) must be ...`.
    """
    values = {name: env.get(name, "") for name in PASSED_THROUGH}
    for dest, variable, _flag in ENV_MIRRORS:
        given = flags.get(dest)
        if given is not None and given is not False:
            values[variable] = str(given)
        else:
            values[variable] = env.get(variable, "")
    read = Env(values, label=_names)
    defaults = WorkerConfig()
    config = WorkerConfig(
        queue_addr=read.address("QUEUE_ADDR", defaults.queue_addr),
        auth_token=role_token(read, "QUEUE_WORKER_TOKEN") or read.secret("QUEUE_AUTH_TOKEN"),
        admin_token=role_token(read, "QUEUE_ADMIN_TOKEN") or read.secret("QUEUE_AUTH_TOKEN"),
        tls=ClientTls.from_env(read),
        token_source=_source(read, "QUEUE_WORKER_TOKEN", "QUEUE_ADMIN_TOKEN"),
        admin_token_source=_source(read, "QUEUE_ADMIN_TOKEN", "QUEUE_WORKER_TOKEN"),
        worker_id=read.text("WORKER_ID", "") or default_worker_id(),
        queue=read.text("WORKER_QUEUE", defaults.queue),
        pipeline=read.text("WORKER_PIPELINE", defaults.pipeline),
        once=read.boolean("WORKER_ONCE", defaults.once),
        limit=read.whole("WORKER_LIMIT", defaults.limit, minimum=0),
        poll_interval_seconds=read.number(
            "WORKER_POLL_INTERVAL",
            defaults.poll_interval_seconds,
            minimum=0,
            maximum=MAX_POLL_INTERVAL_SECONDS,
        ),
        concurrency=read.whole(
            "WORKER_CONCURRENCY", defaults.concurrency, minimum=1, maximum=MAX_CONCURRENCY
        ),
        heartbeat_interval_seconds=read.number(
            "HEARTBEAT_INTERVAL_SECONDS",
            defaults.heartbeat_interval_seconds,
            minimum=0.05,
            maximum=MAX_HEARTBEAT_INTERVAL_SECONDS,
        ),
        heartbeat_timeout_seconds=read.number(
            "HEARTBEAT_TIMEOUT_SECONDS", defaults.heartbeat_timeout_seconds, minimum=0.1
        ),
        shutdown_grace_seconds=read.number(
            "WORKER_SHUTDOWN_GRACE_SECONDS", defaults.shutdown_grace_seconds, minimum=0
        ),
        rpc_timeout_seconds=read.number(
            "WORKER_RPC_TIMEOUT_SECONDS", defaults.rpc_timeout_seconds, minimum=0.1
        ),
        connect_timeout_seconds=read.number(
            "WORKER_CONNECT_TIMEOUT_SECONDS", defaults.connect_timeout_seconds, minimum=0
        ),
    )
    if config.heartbeat_timeout_seconds <= 2 * config.heartbeat_interval_seconds:
        raise read.error(
            "HEARTBEAT_TIMEOUT_SECONDS",
            "must be more than twice --heartbeat-interval (HEARTBEAT_INTERVAL_SECONDS), got "
            f"{config.heartbeat_timeout_seconds:g} against {config.heartbeat_interval_seconds:g}",
        )
    if len(config.worker_id) > limits.MAX_WORKER_ID_CHARS or re.search(r"\s", config.worker_id):
        raise read.error(
            "WORKER_ID", f"must be 1..{limits.MAX_WORKER_ID_CHARS} characters without spaces"
        )
    problem = limits.queue_name_problem(config.queue)
    if problem is not None:
        raise read.error("WORKER_QUEUE", problem.removeprefix("queue "))
    if not re.fullmatch(r"[\w.]+:[\w.]+", config.pipeline):
        raise read.error("WORKER_PIPELINE", f"must be module:callable, got {config.pipeline!r}")
    return config


def _source(read: Env, variable: str, other_role: str) -> str:
    """The variable a role's token comes from, as a refusal names it: the role's own when set,
    or when role tokens are in use and neither it nor QUEUE_AUTH_TOKEN is."""
    if read.secret(variable):
        return variable
    if read.secret("QUEUE_AUTH_TOKEN") or not read.secret(other_role):
        return "QUEUE_AUTH_TOKEN"
    return variable


def _names(variable: str) -> str:
    """`--limit (WORKER_LIMIT)`: the flag and its variable, as a message names a setting."""
    for _dest, known, flag in ENV_MIRRORS:
        if known == variable:
            return f"{flag} ({variable})"
    return variable
