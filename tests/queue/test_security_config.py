"""Credentials and TLS settings: a weak or inconsistent one stops a process at start-up, named."""

from __future__ import annotations

import pytest

from gateway.config import Config as GatewayConfig
from jobqueue.settings import ConfigError
from queue_service.config import Config
from worker_service.config import resolve

STRONG = "0123456789abcdef"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"QUEUE_WORKER_TOKEN": "short"}, "QUEUE_WORKER_TOKEN"),
        ({"QUEUE_ADMIN_TOKEN": "with spaces in the token"}, "QUEUE_ADMIN_TOKEN"),
        ({"QUEUE_WORKER_TOKEN": STRONG, "QUEUE_ADMIN_TOKEN": STRONG}, "must differ"),
        ({"QUEUE_TLS_CERT_FILE": "/nonexistent/cert.pem"}, "QUEUE_TLS_CERT_FILE"),
        ({"QUEUE_TLS_CLIENT_CA_FILE": "/etc/hostname"}, "QUEUE_TLS_CLIENT_CA_FILE"),
    ],
)
def test_bad_credentials_stop_the_queue_service(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Config.from_env(env)


def test_each_role_token_is_read_and_never_shown() -> None:
    config = Config.from_env(
        {"QUEUE_WORKER_TOKEN": STRONG, "QUEUE_ADMIN_TOKEN": STRONG[::-1], "QUEUE_AUTH_TOKEN": "x"}
    )
    assert (config.worker_token, config.admin_token, config.auth_token) == (
        STRONG,
        STRONG[::-1],
        "x",
    )
    assert STRONG not in repr(config) and STRONG[::-1] not in repr(config)


def test_clients_prefer_their_role_token_over_the_shared_one() -> None:
    env = {"QUEUE_AUTH_TOKEN": "shared", "QUEUE_WORKER_TOKEN": STRONG}
    worker = resolve({}, env)
    assert (worker.auth_token, worker.admin_token) == (STRONG, "shared")
    assert (worker.token_source, worker.admin_token_source) == (
        "QUEUE_WORKER_TOKEN",
        "QUEUE_AUTH_TOKEN",
    )
    assert STRONG not in repr(worker)
    gateway = GatewayConfig.from_env(
        {"ADMIN_API_KEY": STRONG, "QUEUE_AUTH_TOKEN": "shared", "QUEUE_ADMIN_TOKEN": STRONG[::-1]}
    )
    assert gateway.queue_auth_token == STRONG[::-1]
    with pytest.raises(ConfigError, match="QUEUE_WORKER_TOKEN"):
        resolve({}, {"QUEUE_WORKER_TOKEN": "short"})
