"""The gateway's configuration: read once from the environment, validated at start-up.

A bad or missing value stops the process with one line naming the variable, so a misconfigured
deployment fails at once instead of answering every request with an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobqueue.settings import ConfigError, Env, role_token
from jobqueue.tls import ClientTls

__all__ = ["Config", "ConfigError"]

DEFAULT_QUEUE_ADDR = "127.0.0.1:50051"
# A shorter key can be guessed; `openssl rand -hex 32` makes 64 characters.
MIN_ADMIN_KEY_CHARS = 16


@dataclass(frozen=True)
class Config:
    # The secret every /api request must present as X-Admin-Key. Never logged.
    admin_api_key: str = field(repr=False)
    host: str = "0.0.0.0"
    port: int = 3000
    queue_addr: str = DEFAULT_QUEUE_ADDR
    # Sent to the queue service as `authorization: Bearer ...` when set: QUEUE_ADMIN_TOKEN, else
    # QUEUE_AUTH_TOKEN. Never logged.
    queue_auth_token: str | None = field(default=None, repr=False)
    tls: ClientTls | None = None
    # The deadline of every gRPC call: a hung queue service costs a caller at most this long
    # (then 504) instead of holding the HTTP request open forever.
    grpc_timeout_seconds: float = 10.0
    # Larger bodies are refused with 413 before they are parsed; an enqueue body is ~100 bytes.
    max_body_bytes: int = 64 * 1024
    # Refused X-Admin-Key values one client may send per window before it gets 429 (guard.py).
    auth_failure_limit: int = 10
    auth_failure_window_seconds: float = 60.0
    # The health rule's backlog threshold: a runnable job that has waited longer than this
    # means workers are missing or too few, and /api/ingest/stats reports "unhealthy".
    health_max_wait_seconds: float = 900.0

    @classmethod
    def from_env(cls, values: Mapping[str, str] | None = None) -> Config:
        env = Env(os.environ if values is None else values)
        key = env.secret("ADMIN_API_KEY")
        if key is None or not key.strip():
            raise ConfigError("ADMIN_API_KEY is required: the key that X-Admin-Key must match")
        if len(key) < MIN_ADMIN_KEY_CHARS:
            raise ConfigError(
                f"ADMIN_API_KEY must be at least {MIN_ADMIN_KEY_CHARS} characters "
                "(openssl rand -hex 32), got a shorter one"
            )
        return cls(
            admin_api_key=key,
            host=env.text("GATEWAY_HOST", cls.host),
            port=env.whole("GATEWAY_PORT", cls.port, minimum=0, maximum=65535),
            queue_addr=env.address("QUEUE_ADDR", DEFAULT_QUEUE_ADDR),
            queue_auth_token=role_token(env, "QUEUE_ADMIN_TOKEN") or env.secret("QUEUE_AUTH_TOKEN"),
            tls=ClientTls.from_env(env),
            grpc_timeout_seconds=env.number(
                "GATEWAY_GRPC_TIMEOUT_SECONDS", cls.grpc_timeout_seconds, minimum=0.1
            ),
            max_body_bytes=env.whole("GATEWAY_MAX_BODY_BYTES", cls.max_body_bytes, minimum=256),
            auth_failure_limit=env.whole(
                "GATEWAY_AUTH_FAILURE_LIMIT", cls.auth_failure_limit, minimum=1
            ),
            auth_failure_window_seconds=env.number(
                "GATEWAY_AUTH_FAILURE_WINDOW_SECONDS", cls.auth_failure_window_seconds, minimum=1
            ),
            health_max_wait_seconds=env.number(
                "GATEWAY_HEALTH_MAX_WAIT_SECONDS", cls.health_max_wait_seconds, minimum=1
            ),
        )
