"""The gateway's configuration: read once from the environment, validated at start-up.

A bad or missing value stops the process with one line naming the variable, so a misconfigured
deployment fails at once instead of answering every request with an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Config:
    # The secret every /api request must present as X-Admin-Key. Never logged.
    admin_api_key: str = field(repr=False)
    host: str = "0.0.0.0"
    port: int = 3000
    queue_addr: str = "127.0.0.1:50051"
    # Sent to the queue service as `authorization: Bearer ...` when set. Never logged.
    queue_auth_token: str | None = field(default=None, repr=False)
    # The deadline of every gRPC call: a hung queue service costs a caller at most this long
    # (then 504) instead of holding the HTTP request open forever.
    grpc_timeout_seconds: float = 10.0
    # Larger bodies are refused with 413 before they are parsed; an enqueue body is ~100 bytes.
    max_body_bytes: int = 64 * 1024
    # The health rule's backlog threshold: a runnable job that has waited longer than this
    # means workers are missing or too few, and /api/ingest/stats reports "unhealthy".
    health_max_wait_seconds: float = 900.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        key = env.get("ADMIN_API_KEY", "")
        if not key.strip():
            raise ConfigError("ADMIN_API_KEY is required: the key that X-Admin-Key must match")
        config = cls(
            admin_api_key=key,
            host=env.get("GATEWAY_HOST") or cls.host,
            port=int(_number(env, "GATEWAY_PORT", cls.port, minimum=0, maximum=65535, whole=True)),
            queue_addr=env.get("QUEUE_ADDR") or cls.queue_addr,
            queue_auth_token=env.get("QUEUE_AUTH_TOKEN") or None,
            grpc_timeout_seconds=_number(
                env, "GATEWAY_GRPC_TIMEOUT_SECONDS", cls.grpc_timeout_seconds, minimum=0.1
            ),
            max_body_bytes=int(
                _number(env, "GATEWAY_MAX_BODY_BYTES", cls.max_body_bytes, minimum=256, whole=True)
            ),
            health_max_wait_seconds=_number(
                env, "GATEWAY_HEALTH_MAX_WAIT_SECONDS", cls.health_max_wait_seconds, minimum=1
            ),
        )
        if not re.fullmatch(r"[^\s/]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", config.queue_addr):
            raise ConfigError(f"QUEUE_ADDR must be HOST:PORT, got {config.queue_addr!r}")
        return config


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float | None = None,
    whole: bool = False,
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"{minimum:g}..{maximum:g}" if maximum is not None else f"at least {minimum:g}"
        raise ConfigError(f"{name} must be {bounds}, got {raw!r}")
    return value
