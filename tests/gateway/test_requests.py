"""What the gateway refuses: requests without the admin key, and bad input of every kind. Each
gets a 4xx in the one error shape and changes nothing (the database stays empty)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import Stack

pytestmark = pytest.mark.integration

JOB = str(uuid.uuid4())
S3 = {"source_type": "s3", "s3_key": "videos/test-ad.mp4"}

# Every route of the API (and one that does not exist: it is under /api, so it needs a key).
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/ingest/enqueue", S3),
    ("GET", "/api/ingest/jobs", None),
    ("GET", "/api/ingest/jobs?stats=true", None),
    ("GET", f"/api/ingest/jobs/{JOB}", None),
    ("POST", f"/api/ingest/jobs/{JOB}", {"action": "cancel"}),
    ("POST", f"/api/ingest/jobs/{JOB}", {"action": "retry"}),
    ("GET", "/api/ingest/stats", None),
    ("GET", "/api/ingest/running", None),
    ("GET", f"/api/ingest/adverts/{JOB}", None),
    ("GET", "/api/no-such-route", None),
]
WRONG_KEYS: list[dict[str, str]] = [
    {},
    {"X-Admin-Key": ""},
    {"X-Admin-Key": "wrong"},
    {"X-Admin-Key": "test-admin-key"},  # a prefix of the real key
    {"X-Admin-Key": "test-admin-key-0123456789x"},  # the real key and one more character
    {"Authorization": "Bearer test-admin-key-0123456789"},  # the right secret, wrong header
]


def request(
    stack: Stack, method: str, path: str, body: Any = None, **kwargs: Any
) -> httpx.Response:
    with httpx.Client(base_url=stack.base_url, timeout=15) as plain:
        return plain.request(method, path, json=body, **kwargs)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("headers", WRONG_KEYS, ids=lambda h: repr(h)[:40])
def test_every_route_refuses_a_missing_or_wrong_key(
    shared_stack: Stack, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    answer = request(shared_stack, method, path, body, headers=headers)
    assert answer.status_code == 401
    # Missing and wrong are indistinguishable.
    assert answer.json() == {
        "error": {
            "code": "UNAUTHENTICATED",
            "message": "missing or invalid X-Admin-Key",
            "field": None,
            "reason": None,
        }
    }
    assert shared_stack.job_count() == 0


def test_the_key_is_checked_before_the_body(shared_stack: Stack) -> None:
    """An unauthenticated caller learns nothing about the body rules."""
    for content, content_type in (
        (b"{not json", "application/json"),
        (b"x" * 100_000, "text/plain"),
    ):
        answer = request(
            shared_stack,
            "POST",
            "/api/ingest/enqueue",
            content=content,
            headers={"Content-Type": content_type},
        )
        assert answer.status_code == 401


def test_the_header_name_is_case_insensitive(shared_stack: Stack) -> None:
    answer = request(
        shared_stack,
        "GET",
        "/api/ingest/stats",
        headers={"x-admin-key": "test-admin-key-0123456789"},
    )
    assert answer.status_code == 200


def enqueue(**fields: Any) -> dict[str, Any]:
    return {"source_type": "s3", "s3_key": "videos/ok.mp4", **fields}


# (body, field at fault) for POST /api/ingest/enqueue: all 400 INVALID_ARGUMENT.
BAD_ENQUEUE_BODIES: list[tuple[Any, str | None]] = [
    ({"s3_key": "videos/a.mp4"}, "source_type"),
    ({"source_type": "ftp", "s3_key": "videos/a.mp4"}, "source_type"),
    ({"source_type": "S3", "s3_key": "videos/a.mp4"}, "source_type"),
    ({"source_type": None, "s3_key": "videos/a.mp4"}, "source_type"),
    ({"source_type": "s3"}, "s3_key"),
    ({"source_type": "s3", "path": "videos/a.mp4"}, "s3_key"),
    ({"source_type": "local", "s3_key": "videos/a.mp4"}, "path"),
    (enqueue(s3_key=""), "s3_key"),
    (enqueue(s3_key=None), "s3_key"),
    (enqueue(s3_key=123), "s3_key"),
    (enqueue(s3_key=["videos/a.mp4"]), "s3_key"),
    (enqueue(s3_key="/videos/a.mp4"), "s3_key"),
    (enqueue(s3_key="videos/../secrets.txt"), "s3_key"),
    (enqueue(s3_key=".."), "s3_key"),
    (enqueue(s3_key="videos/a\x00.mp4"), "s3_key"),
    (enqueue(s3_key="videos/a\n.mp4"), "s3_key"),
    (enqueue(s3_key="videos/a\x7f.mp4"), "s3_key"),
    (enqueue(s3_key=" videos/a.mp4"), "s3_key"),
    (enqueue(s3_key="v" * 1025), "s3_key"),
    (enqueue(s3_key="é" * 600), "s3_key"),  # 600 characters, 1200 bytes
    ({"source_type": "local", "path": ""}, "path"),
    ({"source_type": "local", "path": "/data/../etc/passwd"}, "path"),
    ({"source_type": "local", "path": "/data/a\x00.mp4"}, "path"),
    (enqueue(extra="x"), "extra"),
    (enqueue(queue="other"), "queue"),
    (enqueue(priority="5"), "priority"),
    (enqueue(priority=1.5), "priority"),
    (enqueue(priority=True), "priority"),
    (enqueue(priority=1001), "priority"),
    (enqueue(priority=1001.0), "priority"),
    (enqueue(priority=-1001), "priority"),
    (enqueue(priority=2**63), "priority"),
    (enqueue(max_attempts=0), "max_attempts"),
    (enqueue(max_attempts=101), "max_attempts"),
    (enqueue(max_attempts="3"), "max_attempts"),
    (enqueue(idempotency_key=""), "idempotency_key"),
    (enqueue(idempotency_key="k" * 501), "idempotency_key"),
    (enqueue(idempotency_key="a\x00b"), "idempotency_key"),
    (enqueue(idempotency_key=7), "idempotency_key"),
    # The form of the keys derived from the input: a caller's could name another input's job.
    (enqueue(idempotency_key="0123456789abcdef" * 4), "idempotency_key"),
    ([], None),
    ("videos/a.mp4", None),
    (None, None),
    (42, None),
]


@pytest.mark.parametrize(("body", "field"), BAD_ENQUEUE_BODIES, ids=lambda v: repr(v)[:50])
def test_enqueue_refuses_bad_fields(shared_stack: Stack, body: Any, field: str | None) -> None:
    answer = shared_stack.http.post("/api/ingest/enqueue", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["field"] == field
    assert error["message"]
    assert shared_stack.job_count() == 0


def post_raw(stack: Stack, path: str, content: bytes, content_type: str | None) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return stack.http.post(path, content=content, headers=headers)


@pytest.mark.parametrize("path", ["/api/ingest/enqueue", f"/api/ingest/jobs/{JOB}"])
@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b'{"source_type": "s3", ', "application/json", 400, "INVALID_ARGUMENT"),
        (b"source_type=s3", "application/json", 400, "INVALID_ARGUMENT"),
        (b"\xff\xfe{}", "application/json", 400, "INVALID_ARGUMENT"),
        (b"", "application/json", 400, "INVALID_ARGUMENT"),
        (b"", None, 400, "INVALID_ARGUMENT"),
        (b'{"action": "cancel"}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (
            b'{"action": "cancel"}',
            "application/x-www-form-urlencoded",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (b'{"action": "cancel"}', None, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b'{"s3_key": "' + b"a" * 70_000 + b'"}', "application/json", 413, "PAYLOAD_TOO_LARGE"),
    ],
)
def test_bodies_that_are_not_json_or_too_large(
    shared_stack: Stack,
    path: str,
    content: bytes,
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    answer = post_raw(shared_stack, path, content, content_type)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert shared_stack.job_count() == 0


def test_the_body_limit_holds_without_content_length(shared_stack: Stack) -> None:
    """A chunked body declares no size: the gateway counts what actually arrives."""

    def chunks() -> Any:
        for _ in range(20):
            yield b"a" * 10_000

    answer = shared_stack.http.post(
        "/api/ingest/enqueue", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_json_with_a_charset_is_json(shared_stack: Stack) -> None:
    answer = post_raw(
        shared_stack,
        f"/api/ingest/jobs/{JOB}",
        b'{"action": "cancel"}',
        "application/json; charset=utf-8",
    )
    assert answer.status_code == 404  # accepted as JSON; the job does not exist


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "explode"}, "action"),
        ({"action": "CANCEL"}, "action"),
        ({"action": None}, "action"),
        ({}, "action"),
        ({"action": "cancel", "force": True}, "force"),
        (["cancel"], None),
    ],
    ids=repr,
)
def test_job_action_refuses_unknown_actions(
    shared_stack: Stack, body: Any, field: str | None
) -> None:
    answer = shared_stack.http.post(f"/api/ingest/jobs/{JOB}", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_ARGUMENT", field)


@pytest.mark.parametrize(
    "job_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "%00", "' OR 1=1 --"]
)
def test_a_job_id_that_is_not_a_uuid_is_400(shared_stack: Stack, job_id: str) -> None:
    for answer in (
        shared_stack.http.get(f"/api/ingest/jobs/{job_id}"),
        shared_stack.http.post(f"/api/ingest/jobs/{job_id}", json={"action": "cancel"}),
    ):
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert (error["code"], error["field"]) == ("INVALID_ARGUMENT", "job_id")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=1e3", "limit"),
        ("status=BOGUS", "status"),
        ("status=queued", "status"),
        ("status=", "status"),
        ("stats=maybe", "stats"),
        ("cursor=", "cursor"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=" + "a" * 1001, "cursor"),
        ("stat=true", "stat"),
    ],
)
def test_list_refuses_bad_query_parameters(shared_stack: Stack, query: str, field: str) -> None:
    answer = shared_stack.http.get(f"/api/ingest/jobs?{query}")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_ARGUMENT", field)


def test_unknown_routes_and_methods_use_the_error_shape(shared_stack: Stack) -> None:
    missing = shared_stack.http.get("/api/ingest/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    wrong = shared_stack.http.delete(f"/api/ingest/jobs/{JOB}")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_no_error_body_leaks_internals(shared_stack: Stack) -> None:
    answers = [
        shared_stack.http.get("/api/ingest/jobs?cursor=not-a-cursor"),
        shared_stack.http.post("/api/ingest/enqueue", json=enqueue(s3_key="a\x00")),
        post_raw(shared_stack, "/api/ingest/enqueue", b"{bad", "application/json"),
    ]
    for answer in answers:
        text = answer.text.lower()
        for secret in ("traceback", "postgresql://", "select ", "psycopg", "127.0.0.1"):
            assert secret not in text, answer.text
