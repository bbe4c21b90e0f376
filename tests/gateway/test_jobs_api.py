"""What the REST API answers beyond the checklist's own steps (those are tests/e2e's): enqueue's
201 and 200, a job's every column, the cancel and retry rules, unknown jobs, the health rule and
the jobs list's filter and pages."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.conftest import Stack, running_stack
from tests.support.jobs import fetch_job, insert_job

pytestmark = pytest.mark.integration


def test_enqueue_answers_201_for_a_new_job_and_200_for_a_known_one(stack: Stack) -> None:
    body = {"source_type": "local", "path": "/data/videos/ad.mp4", "priority": 5}
    first = stack.http.post("/api/ingest/enqueue", json=body)
    second = stack.http.post("/api/ingest/enqueue", json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["job_id"] == first.json()["job_id"]
    row = fetch_job(stack.db, first.json()["job_id"])
    assert row["input"] == {"source_type": "local", "path": "/data/videos/ad.mp4"}
    assert row["priority"] == 5


def test_a_local_path_outside_the_queue_services_media_root_is_a_400(
    database_url: str, tmp_path: Path
) -> None:
    # The gateway does not know LOCAL_MEDIA_ROOT; the queue service applies it, and its
    # INVALID_ARGUMENT is the REST API's 400 naming the body's own field.
    root = tmp_path / "media"
    with running_stack(database_url, {"LOCAL_MEDIA_ROOT": str(root)}) as stack:
        inside = stack.http.post(
            "/api/ingest/enqueue", json={"source_type": "local", "path": "ads/ad.mp4"}
        )
        assert inside.status_code == 201, inside.text
        outside = stack.http.post(
            "/api/ingest/enqueue", json={"source_type": "local", "path": "/etc/shadow"}
        )
        assert outside.status_code == 400, outside.text
        error = outside.json()["error"]
        assert (error["code"], error["field"]) == ("INVALID_ARGUMENT", "path")
        assert "LOCAL_MEDIA_ROOT" in error["message"]
        assert stack.job_count() == 1


def test_a_job_shows_every_column_by_name(stack: Stack) -> None:
    ad_id = str(uuid.uuid4())
    job = insert_job(
        stack.db, status="SUCCEEDED", output={"ad_id": ad_id, "frames": 12}, attempts=1
    )
    shown = stack.http.get(f"/api/ingest/jobs/{job['id']}").json()["job"]
    assert shown["status"] == "SUCCEEDED"
    assert shown["output"] == {"ad_id": ad_id, "frames": 12}
    columns = {
        "id", "queue", "status", "priority", "attempts", "max_attempts", "run_after", "locked_at",
        "locked_by", "input", "output", "idempotency_key", "last_error", "error_code", "errors",
        "stage", "progress", "last_heartbeat_at", "processing_started_at",
        "processing_completed_at", "completed_at", "created_at", "updated_at",
    }  # fmt: skip
    assert columns <= set(shown)
    assert shown["id"] == str(job["id"]) and shown["attempts"] == 1
    assert shown["last_error"] is None and shown["locked_at"] is None
    assert shown["completed_at"].startswith(str(job["completed_at"].year))


def test_a_row_written_from_psql_that_protobuf_cannot_carry_still_reads(stack: Stack) -> None:
    errors = [{"attempt": 1, "code": "E", "message": f"m{n}", "number": n} for n in range(8, 28)]
    row = stack.db.execute(
        "INSERT INTO ingestion_jobs (input, idempotency_key, status, completed_at, errors)"
        """ VALUES ('{"source_type": "s3", "s3_key": "a.mp4", "frames": 1e400}', 'k', 'FAILED',"""
        " now(), %s::jsonb) RETURNING id",
        (json.dumps(errors),),
    ).fetchone()
    assert row is not None
    shown = stack.http.get(f"/api/ingest/jobs/{row[0]}")
    assert shown.status_code == 200
    job = shown.json()["job"]
    assert job["input"]["frames"] == "1" + "0" * 400
    assert (len(job["errors"]), job["errors_total"]) == (20, 27)
    listed = stack.http.get("/api/ingest/jobs")
    assert listed.status_code == 200 and len(listed.json()["jobs"]) == 1


def test_cancel_of_a_running_job_is_pending_until_its_worker_stops(stack: Stack) -> None:
    running = insert_job(stack.db, status="RUNNING")
    answer = stack.http.post(f"/api/ingest/jobs/{running['id']}", json={"action": "cancel"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True and "running" in body["message"]
    assert body["job"]["status"] == "RUNNING" and body["job"]["cancel_requested"] is True


@pytest.mark.parametrize(
    ("status", "action"),
    [("SUCCEEDED", "cancel"), ("QUEUED", "retry"), ("RUNNING", "retry")],
)
def test_an_action_the_status_forbids_is_409_and_changes_nothing(
    stack: Stack, status: str, action: str
) -> None:
    job = insert_job(stack.db, status=status)
    answer = stack.http.post(f"/api/ingest/jobs/{job['id']}", json={"action": action})
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["code"] == "FAILED_PRECONDITION" and error["reason"] == "INVALID_TRANSITION"
    assert fetch_job(stack.db, job["id"])["updated_at"] == job["updated_at"]


def test_an_unknown_job_is_404(stack: Stack) -> None:
    unknown = uuid.uuid4()
    for answer in (
        stack.http.get(f"/api/ingest/jobs/{unknown}"),
        stack.http.post(f"/api/ingest/jobs/{unknown}", json={"action": "cancel"}),
        stack.http.post(f"/api/ingest/jobs/{unknown}", json={"action": "retry"}),
    ):
        assert answer.status_code == 404
        assert answer.json()["error"]["reason"] == "JOB_NOT_FOUND"


def test_health_follows_the_documented_rule(stack: Stack) -> None:
    def health() -> str:
        answer = stack.http.get("/api/ingest/stats")
        assert answer.status_code == 200
        return str(answer.json()["health"])

    insert_job(stack.db, status="SUCCEEDED")
    insert_job(stack.db, status="QUEUED")
    assert health() == "healthy"

    # Dead letter: someone must look, but work still flows.
    failed = insert_job(stack.db, status="FAILED")
    assert health() == "degraded"

    # A RUNNING job whose worker stopped heartbeating (queue default timeout 120 s).
    stale = insert_job(stack.db, status="RUNNING", seconds_ago={"last_heartbeat_at": 3600})
    assert health() == "unhealthy"
    stack.db.execute(
        "DELETE FROM ingestion_jobs WHERE id = ANY(%s)", ([stale["id"], failed["id"]],)
    )
    assert health() == "healthy"

    # A backlog nobody drains: the oldest runnable job waited past the threshold (900 s).
    insert_job(stack.db, status="QUEUED", seconds_ago={"created_at": 3600, "run_after": 3600})
    assert health() == "unhealthy"


def test_jobs_list_filters_limits_and_pages(stack: Stack) -> None:
    for _ in range(3):
        insert_job(stack.db, status="QUEUED")
    insert_job(stack.db, status="FAILED")

    failed = stack.http.get("/api/ingest/jobs", params={"status": "FAILED"}).json()
    assert [job["status"] for job in failed["jobs"]] == ["FAILED"]
    assert "stats" not in failed

    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = stack.http.get("/api/ingest/jobs", params=params).json()
        assert len(page["jobs"]) <= 2
        seen += [job["id"] for job in page["jobs"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 4
