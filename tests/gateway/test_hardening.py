"""The gateway against key guessing: refused keys from one client are slowed down to 429 with
Retry-After (memory bounded), and a short ADMIN_API_KEY stops it at start-up. No I/O: the app
in process, and a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import Config, ConfigError
from gateway.guard import AuthFailures
from tests.gateway.conftest import ADMIN_KEY
from tests.support.processes import PYTHON, free_port, started


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_is_throttled_after_the_limit_until_its_window_ends() -> None:
    clock = Clock()
    failures = AuthFailures(limit=3, window_seconds=60, clock=clock)
    for _ in range(2):
        failures.refused("10.0.0.1")
    assert failures.retry_after("10.0.0.1") is None
    failures.refused("10.0.0.1")
    assert failures.retry_after("10.0.0.1") == 60
    assert failures.retry_after("10.0.0.2") is None  # others are not affected
    clock.now += 59.5
    assert failures.retry_after("10.0.0.1") == 1
    clock.now += 0.5
    assert failures.retry_after("10.0.0.1") is None
    failures.refused("10.0.0.1")  # a new window starts with one refusal
    assert failures.retry_after("10.0.0.1") is None


def test_a_right_key_clears_the_record_and_memory_is_bounded() -> None:
    failures = AuthFailures(limit=2, window_seconds=60, clock=Clock(), max_clients=100)
    failures.refused("a")
    failures.accepted("a")
    failures.refused("a")
    assert failures.retry_after("a") is None
    for n in range(1000):
        failures.refused(f"flood-{n}")
    assert len(failures) == 100


@pytest.fixture
def client() -> Iterator[TestClient]:
    config = Config(
        admin_api_key=ADMIN_KEY,
        queue_addr="127.0.0.1:9",
        auth_failure_limit=3,
        auth_failure_window_seconds=60,
    )
    with TestClient(create_app(config)) as test_client:
        yield test_client


def test_guessing_the_key_gets_429_with_retry_after(client: TestClient) -> None:
    for guess in range(3):
        answer = client.get("/api/ingest/stats", headers={"X-Admin-Key": f"guess-{guess}"})
        assert answer.status_code == 401
    throttled = client.get("/api/ingest/stats", headers={"X-Admin-Key": "guess-3"})
    assert throttled.status_code == 429
    assert 0 < int(throttled.headers["retry-after"]) <= 60
    assert throttled.json()["error"]["code"] == "TOO_MANY_REQUESTS"
    assert throttled.headers["x-content-type-options"] == "nosniff"
    # While throttled even the right key is not compared: guessing cannot go on meanwhile.
    right = client.get("/api/ingest/jobs/not-a-uuid", headers={"X-Admin-Key": ADMIN_KEY})
    assert right.status_code == 429
    # The pages and the docs stay reachable.
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("key", ["short", "fifteen-chars!!"])
def test_a_short_admin_key_stops_the_gateway(key: str) -> None:
    with pytest.raises(ConfigError, match=r"^ADMIN_API_KEY must be at least 16 characters"):
        Config.from_env({"ADMIN_API_KEY": key})
    assert Config.from_env({"ADMIN_API_KEY": "x" * 16}).admin_api_key == "x" * 16


@pytest.mark.integration
def test_a_short_admin_key_is_one_line_at_start_up() -> None:
    env = {"ADMIN_API_KEY": "password", "GATEWAY_PORT": str(free_port())}
    with started([PYTHON, "-m", "gateway"], env, "gateway") as process:
        assert process.wait(timeout=30) == 2
    assert process.lines == [
        "error: ADMIN_API_KEY must be at least 16 characters (openssl rand -hex 32), "
        "got a shorter one"
    ]
