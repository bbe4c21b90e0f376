"""Settings that cannot work (observability's, a port already taken) stop a process at once,
with one clear line."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.support.processes import PYTHON, ROOT, queue_service_env

pytestmark = pytest.mark.integration


def run(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", module, *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("module", "env"),
    [
        ("queue_service", {}),
        ("gateway", {"ADMIN_API_KEY": "k" * 20}),
        ("worker_service", {}),
    ],
)
def test_an_unknown_log_format_stops_each_process(module: str, env: dict[str, str]) -> None:
    result = run(module, {**env, "LOG_FORMAT": "xml"})
    assert result.returncode == 2, result
    assert "LOG_FORMAT must be one of text, json, got 'xml'" in result.stderr


def test_a_bad_metrics_address_stops_the_worker() -> None:
    result = run("worker_service", {"WORKER_METRICS_LISTEN": "9102"}, "--once")
    assert result.returncode == 2, result
    assert "WORKER_METRICS_LISTEN must be HOST:PORT, got '9102' (or off)" in result.stderr


def test_a_taken_metrics_port_stops_the_queue_service(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = queue_service_env(database_url, 0, QUEUE_METRICS_LISTEN=f"127.0.0.1:{port}")
        env["QUEUE_LISTEN"] = "127.0.0.1:0"
        result = run("queue_service", env)
    assert result.returncode == 1, result
    assert f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use" in (
        result.stderr
    ), result.stderr


def test_a_taken_service_port_stops_the_queue_service_at_once(database_url: str) -> None:
    # It once logged gRPC's bind error and hung, its database pools keeping it alive.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = queue_service_env(database_url, port, QUEUE_METRICS_LISTEN="off")
        result = run("queue_service", env)
    assert result.returncode == 1, result
    assert f"error: cannot listen on 127.0.0.1:{port}: the address is in use" in result.stderr
