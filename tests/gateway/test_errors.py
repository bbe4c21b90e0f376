"""The one gRPC -> HTTP mapping, code by code (no I/O), and a deadline seen end to end: the real
gateway in front of a queue service that never answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.client import QueueClient
from gateway.config import Config
from gateway.errors import from_rpc_error
from jobqueue.v1 import admin_service_pb2_grpc
from queue_service.errors import DomainError, InvalidArgument, InvalidTransition, to_status
from tests.gateway.conftest import ADMIN_KEY, gateway_under_test

SECRET_DETAIL = "connection to postgresql://app:hunter2@db:5432/jobs failed: SELECT 1"


def rpc_error(code: grpc.StatusCode, details: str, domain: DomainError | None = None) -> Any:
    trailing = grpc.aio.Metadata()
    if domain is not None:
        for key, value in to_status(domain).trailing_metadata:
            trailing.add(key, value)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


def answer(error: Any) -> tuple[int, dict[str, Any]]:
    response = from_rpc_error(error)
    return response.status_code, json.loads(bytes(response.body))["error"]


@pytest.mark.parametrize(
    ("code", "status", "name"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400, "INVALID_ARGUMENT"),
        (grpc.StatusCode.OUT_OF_RANGE, 400, "OUT_OF_RANGE"),
        (grpc.StatusCode.NOT_FOUND, 404, "NOT_FOUND"),
        (grpc.StatusCode.FAILED_PRECONDITION, 409, "FAILED_PRECONDITION"),
        (grpc.StatusCode.ALREADY_EXISTS, 409, "ALREADY_EXISTS"),
        (grpc.StatusCode.ABORTED, 409, "ABORTED"),
        (grpc.StatusCode.PERMISSION_DENIED, 502, "UPSTREAM_AUTH_FAILED"),
        (grpc.StatusCode.UNAUTHENTICATED, 502, "UPSTREAM_AUTH_FAILED"),
        (grpc.StatusCode.UNAVAILABLE, 503, "UNAVAILABLE"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "DEADLINE_EXCEEDED"),
        (grpc.StatusCode.INTERNAL, 502, "UPSTREAM_ERROR"),
        (grpc.StatusCode.UNKNOWN, 502, "UPSTREAM_ERROR"),
        (grpc.StatusCode.UNIMPLEMENTED, 502, "UPSTREAM_ERROR"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 502, "UPSTREAM_ERROR"),
        (grpc.StatusCode.DATA_LOSS, 502, "UPSTREAM_ERROR"),
        (grpc.StatusCode.CANCELLED, 502, "UPSTREAM_ERROR"),
    ],
)
def test_every_status_code_maps_once(code: grpc.StatusCode, status: int, name: str) -> None:
    http_status, error = answer(rpc_error(code, SECRET_DETAIL))
    assert (http_status, error["code"]) == (status, name)
    if status >= 500:
        # Server-side detail stays in the log.
        assert "postgresql" not in error["message"] and "SELECT" not in error["message"]


def test_the_callers_own_mistakes_keep_the_services_words_and_reason() -> None:
    error = InvalidTransition("job 1 is SUCCEEDED and cannot be cancelled", status="SUCCEEDED")
    status, body = answer(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, error.message, error))
    assert status == 409
    assert body["message"] == "job 1 is SUCCEEDED and cannot be cancelled"
    assert body["reason"] == "INVALID_TRANSITION"


def test_proto_field_names_become_the_rest_names() -> None:
    error = InvalidArgument("page_token is not one this service issued", field="page_token")
    status, body = answer(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, error.message, error))
    assert (status, body["field"]) == (400, "cursor")
    assert body["message"] == "cursor is not one this service issued"


class NeverAnswers(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self) -> None:
        self.release = threading.Event()

    def GetQueueStats(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.release.wait(30)
        context.abort(grpc.StatusCode.CANCELLED, "released")


@pytest.fixture
def hung_queue_service() -> Iterator[str]:
    servicer = NeverAnswers()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        servicer.release.set()
        server.stop(0)


@pytest.mark.integration
def test_a_queue_service_that_never_answers_is_504_after_the_deadline(
    hung_queue_service: str,
) -> None:
    gateway = gateway_under_test(hung_queue_service, GATEWAY_GRPC_TIMEOUT_SECONDS="0.5")
    with gateway as (_, base_url):
        response = httpx.get(
            f"{base_url}/api/ingest/stats", headers={"X-Admin-Key": ADMIN_KEY}, timeout=10
        )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "DEADLINE_EXCEEDED"
    assert response.elapsed.total_seconds() < 5


def test_a_bug_in_the_gateway_is_a_bare_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line of defence: an unexpected exception still answers in the error shape,
    without its trace or text."""

    async def broken(self: QueueClient) -> Any:
        raise RuntimeError(SECRET_DETAIL)

    monkeypatch.setattr(QueueClient, "stats", broken)
    app = create_app(Config(admin_api_key=ADMIN_KEY, queue_addr="127.0.0.1:9"))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/ingest/stats", headers={"X-Admin-Key": ADMIN_KEY})
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "INTERNAL",
            "message": "internal error; see the gateway log",
            "field": None,
            "reason": None,
        }
    }
