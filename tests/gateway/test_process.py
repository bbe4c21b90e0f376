"""The gateway as a process and as a client of the queue service: start-up rules, /healthz,
the OpenAPI document, and what callers see when the queue service is down or refuses it."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import ADMIN_KEY, Stack, gateway_under_test, running_stack
from tests.support.processes import PYTHON, free_port, queue_service_process, started
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def test_refuses_to_start_without_an_admin_key() -> None:
    port = free_port()
    env = {"ADMIN_API_KEY": "", "GATEWAY_PORT": str(port), "GATEWAY_HOST": "127.0.0.1"}
    with started([PYTHON, "-m", "gateway"], env, "gateway") as process:
        assert process.wait(timeout=30) == 2
    assert process.lines == [
        "error: ADMIN_API_KEY is required: the key that X-Admin-Key must match"
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "http"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_GRPC_TIMEOUT_SECONDS", "0"),
        ("QUEUE_ADDR", "not an address"),
    ],
)
def test_refuses_to_start_with_a_bad_setting(name: str, value: str) -> None:
    env = {"ADMIN_API_KEY": ADMIN_KEY, "GATEWAY_PORT": str(free_port()), name: value}
    with started([PYTHON, "-m", "gateway"], env, "gateway") as process:
        assert process.wait(timeout=30) == 2
    assert len(process.lines) == 1 and process.lines[0].startswith(f"error: {name} ")


def test_a_taken_port_is_one_clear_error(shared_stack: Stack) -> None:
    port = shared_stack.base_url.rsplit(":", 1)[1]
    env = {"ADMIN_API_KEY": ADMIN_KEY, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": port}
    with started([PYTHON, "-m", "gateway"], env, "gateway") as process:
        assert process.wait(timeout=30) == 1
    assert process.lines[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}")


def test_healthz_is_open_and_reports_the_queue_service(shared_stack: Stack) -> None:
    answer = httpx.get(f"{shared_stack.base_url}/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "queue_service": "SERVING"}


def test_the_admin_key_never_appears_in_the_output(shared_stack: Stack) -> None:
    shared_stack.http.get("/api/ingest/stats")
    httpx.get(f"{shared_stack.base_url}/api/ingest/stats", headers={"X-Admin-Key": "guess"})
    assert ADMIN_KEY not in shared_stack.gateway.output
    assert "guess" not in shared_stack.gateway.output


def test_queue_service_down_is_503_with_json() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    with (
        gateway_under_test(nobody) as (_, base_url),
        httpx.Client(base_url=base_url, headers={"X-Admin-Key": ADMIN_KEY}) as http,
    ):
        health = http.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "queue_service": "UNREACHABLE"}
        for answer in (
            http.get("/api/ingest/stats"),
            http.get("/api/ingest/jobs"),
            http.post("/api/ingest/enqueue", json={"source_type": "s3", "s3_key": "videos/a.mp4"}),
        ):
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "UNAVAILABLE"
            assert nobody not in answer.text  # where the queue service lives stays in the log
        # Input is still validated without the queue service: a 400 is not an outage.
        bad = http.post("/api/ingest/enqueue", json={"source_type": "s3", "s3_key": "/a"})
        assert bad.status_code == 400


def test_a_queue_service_that_stops_and_returns(database_url: str) -> None:
    """The gateway holds nothing that outlives an outage: once the queue service is back (on the
    same address), requests succeed again without restarting the gateway."""
    with running_stack(database_url) as stack:
        assert stack.http.get("/api/ingest/stats").status_code == 200
        assert stack.queue is not None
        port = stack.queue.port
        stack.queue.stop()
        assert stack.http.get("/api/ingest/stats").status_code == 503
        assert stack.http.get("/healthz").status_code == 503
        with queue_service_process(database_url, port=port):
            # The channel reconnects within its (bounded) reconnect backoff.
            status = wait_for(
                lambda: (code := stack.http.get("/api/ingest/stats").status_code) != 503 and code,
                timeout=15,
                what="the gateway to reconnect",
                interval=0.2,
            )
            assert status == 200
            assert stack.http.get("/healthz").status_code == 200


def test_the_bearer_token_reaches_the_queue_service(database_url: str) -> None:
    token = {"QUEUE_AUTH_TOKEN": "queue-secret"}
    with running_stack(database_url, queue_env=token, QUEUE_AUTH_TOKEN="queue-secret") as stack:
        answer = stack.http.post(
            "/api/ingest/enqueue", json={"source_type": "s3", "s3_key": "videos/a.mp4"}
        )
        assert answer.status_code == 201
        assert "queue-secret" not in stack.gateway.output


def test_a_refused_gateway_token_is_502_not_the_callers_401(database_url: str) -> None:
    token = {"QUEUE_AUTH_TOKEN": "queue-secret"}
    with running_stack(database_url, queue_env=token, QUEUE_AUTH_TOKEN="stale-secret") as stack:
        answer = stack.http.get("/api/ingest/stats")
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "UPSTREAM_AUTH_FAILED"
        assert stack.job_count() == 0
        assert "stale-secret" not in stack.gateway.output


def test_openapi_document_declares_the_key_and_the_errors(shared_stack: Stack) -> None:
    document = httpx.get(f"{shared_stack.base_url}/openapi.json").json()
    assert document["components"]["securitySchemes"]["AdminKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Admin-Key",
        "description": "The gateway's ADMIN_API_KEY. Required on every /api route.",
    }
    expected = {
        ("post", "/api/ingest/enqueue"),
        ("get", "/api/ingest/jobs"),
        ("get", "/api/ingest/jobs/{job_id}"),
        ("post", "/api/ingest/jobs/{job_id}"),
        ("get", "/api/ingest/stats"),
        ("get", "/api/ingest/running"),
        ("get", "/api/ingest/adverts/{ad_id}"),
    }
    operations = {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert expected <= set(operations)
    error_ref = "#/components/schemas/ErrorResponse"
    for key in expected:
        operation = operations[key]
        assert operation["security"] == [{"AdminKey": []}]
        responses = operation["responses"]
        assert "422" not in responses  # bad input is 400, never 422
        for status in ("400", "401", "502", "503", "504"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": error_ref}
    assert {"201", "200", "413", "415"} <= set(
        operations[("post", "/api/ingest/enqueue")]["responses"]
    )
    assert {"404", "409"} <= set(operations[("post", "/api/ingest/jobs/{job_id}")]["responses"])
    assert "404" in operations[("get", "/api/ingest/adverts/{ad_id}")]["responses"]
    assert "security" not in operations[("get", "/healthz")]
