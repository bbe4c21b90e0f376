"""The verification checklist's REST steps (Tests 1, 2.2, 6 and 7), run as written: the same curl
(and jq) commands against the real `python -m gateway`, only the port changed."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest

from tests.gateway.conftest import ADMIN_KEY, Stack
from tests.support.jobs import fetch_job, insert_job

pytestmark = pytest.mark.e2e


def shell(stack: Stack, script: str) -> str:
    """Run a checklist snippet with bash, as a user would paste it; return its stdout."""
    port = stack.base_url.rsplit(":", 1)[1]
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace("localhost:3000", f"localhost:{port}")],
        env={"PATH": "/usr/bin:/bin", "ADMIN_API_KEY": ADMIN_KEY},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def last_json(output: str) -> Any:
    """The last JSON document a snippet printed (curl prints one per call)."""
    return json.loads(output.strip().splitlines()[-1])


ENQUEUE_TEST_AD = """
curl -X POST http://localhost:3000/api/ingest/enqueue \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{"source_type": "s3", "s3_key": "videos/test-ad.mp4"}'
"""


def test_1_create_a_job_via_the_api(stack: Stack) -> None:
    # Step 1.1: enqueue.
    created = json.loads(shell(stack, ENQUEUE_TEST_AD))
    assert set(created) == {"job_id", "status", "already_existed"}
    assert created["status"] == "QUEUED" and created["already_existed"] is False
    uuid.UUID(created["job_id"])
    # The stored input is exactly the validated fields, so the derived idempotency key matches
    # for identical requests.
    row = fetch_job(stack.db, created["job_id"])
    assert row["input"] == {"source_type": "s3", "s3_key": "videos/test-ad.mp4"}

    # Step 1.2: the same request again is the same job.
    again = json.loads(shell(stack, ENQUEUE_TEST_AD))
    assert again == {"job_id": created["job_id"], "status": "QUEUED", "already_existed": True}
    assert stack.job_count() == 1

    # Step 1.3: list, with stats.
    listed = json.loads(
        shell(
            stack,
            """
curl http://localhost:3000/api/ingest/jobs?stats=true \\
  -H "X-Admin-Key: $ADMIN_API_KEY"
""",
        )
    )
    assert [job["id"] for job in listed["jobs"]] == [created["job_id"]]
    assert listed["stats"]["by_status"]["QUEUED"] == 1 and listed["stats"]["total"] == 1


def test_enqueue_answers_201_for_a_new_job_and_200_for_a_known_one(stack: Stack) -> None:
    body = {"source_type": "local", "path": "/data/videos/ad.mp4", "priority": 5}
    first = stack.http.post("/api/ingest/enqueue", json=body)
    second = stack.http.post("/api/ingest/enqueue", json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["job_id"] == first.json()["job_id"]
    row = fetch_job(stack.db, first.json()["job_id"])
    assert row["input"] == {"source_type": "local", "path": "/data/videos/ad.mp4"}
    assert row["priority"] == 5


def test_2_2_a_job_shows_every_column_by_name(stack: Stack) -> None:
    ad_id = str(uuid.uuid4())
    job = insert_job(
        stack.db, status="SUCCEEDED", output={"ad_id": ad_id, "frames": 12}, attempts=1
    )
    output = shell(
        stack,
        f"""
curl http://localhost:3000/api/ingest/jobs/{job["id"]} \\
  -H "X-Admin-Key: $ADMIN_API_KEY"
""",
    )
    shown = json.loads(output)["job"]
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


def test_6_1_cancel_a_queued_job(stack: Stack) -> None:
    output = shell(
        stack,
        """
# Create a new job
JOB_ID=$(curl -s -X POST http://localhost:3000/api/ingest/enqueue \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{"source_type": "s3", "s3_key": "videos/to-cancel.mp4"}' | jq -r '.job_id')

# Cancel it
curl -X POST "http://localhost:3000/api/ingest/jobs/$JOB_ID" \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{"action": "cancel"}'
""",
    )
    answer = last_json(output)
    assert answer["success"] is True
    assert answer["message"] == "Job cancelled successfully"
    assert answer["job"]["status"] == "CANCELLED"
    assert fetch_job(stack.db, answer["job"]["id"])["status"] == "CANCELLED"


def test_6_2_retry_a_failed_job(stack: Stack) -> None:
    failed = insert_job(stack.db, status="FAILED", attempts=5, last_error="boom")
    output = shell(
        stack,
        """
# Find a failed job
FAILED_ID=$(curl -s "http://localhost:3000/api/ingest/jobs?status=FAILED" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" | jq -r '.jobs[0].id')

# Retry it
curl -X POST "http://localhost:3000/api/ingest/jobs/$FAILED_ID" \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{"action": "retry"}'
""",
    )
    answer = last_json(output)
    assert answer["success"] is True and answer["message"] == "Job queued for retry"
    assert answer["job"]["id"] == str(failed["id"]) and answer["job"]["status"] == "QUEUED"
    shown = stack.http.get(f"/api/ingest/jobs/{failed['id']}").json()["job"]
    assert shown["status"] == "QUEUED"


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


def test_7_queue_stats(stack: Stack) -> None:
    for _ in range(10):
        insert_job(stack.db, status="SUCCEEDED")
    insert_job(stack.db, status="FAILED")
    for key in ("videos/a.mp4", "videos/b.mp4"):
        stack.http.post("/api/ingest/enqueue", json={"source_type": "s3", "s3_key": key})

    output = shell(
        stack,
        """
curl http://localhost:3000/api/ingest/stats \\
  -H "X-Admin-Key: $ADMIN_API_KEY"
""",
    )
    answer = json.loads(output)
    assert answer["stats"] == {
        "by_status": {
            "QUEUED": 2, "RUNNING": 0, "SUCCEEDED": 10, "FAILED": 1, "RETRY": 0, "CANCELLED": 0
        },
        "total": 13,
    }  # fmt: skip
    assert answer["health"] == "degraded"
    summary = answer["summary"]
    assert {key: summary[key] for key in ("running", "pending", "failed", "has_dead_letter")} == {
        "running": 0,
        "pending": 2,
        "failed": 1,
        "has_dead_letter": True,
    }


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
