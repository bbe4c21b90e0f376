"""The checklist's cancel and retry steps (Test 6) against a stack that runs with per-role
credentials: the audit trail says who did what, in the REST job view and in the table."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.support.databases import create_database, drop_database, url_for
from tests.support.jobs import insert_job
from tests.support.processes import (
    Process,
    gateway_process,
    output_of,
    queue_service_process,
    worker_process,
)

pytestmark = pytest.mark.e2e

ADMIN_KEY = "audit-admin-key-0123456789"
WORKER_TOKEN = "audit-worker-token-0123456789"
ADMIN_TOKEN = "audit-admin-token-0123456789"


@dataclass
class Stack:
    database_url: str
    queue: Process
    gateway_port: int

    def shell(self, script: str) -> str:
        body = script.replace("localhost:3000", f"localhost:{self.gateway_port}")
        return output_of(
            ["bash", "-euo", "pipefail", "-c", body],
            what=f"snippet\n{body}",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ADMIN_API_KEY": ADMIN_KEY},
        )

    def job(self, job_id: str) -> dict[str, Any]:
        url = f"http://localhost:3000/api/ingest/jobs/{job_id}"
        output = self.shell(f'curl -s {url} -H "X-Admin-Key: $ADMIN_API_KEY"')
        job: dict[str, Any] = json.loads(output)["job"]
        return job


@pytest.fixture(scope="module")
def stack(template_database: str) -> Iterator[Stack]:
    name = create_database(template=template_database, prefix="jq_audit")
    url = url_for(name)
    try:
        with contextlib.ExitStack() as processes:
            queue = processes.enter_context(
                queue_service_process(
                    url, QUEUE_WORKER_TOKEN=WORKER_TOKEN, QUEUE_ADMIN_TOKEN=ADMIN_TOKEN
                )
            )
            gateway, _ = processes.enter_context(
                gateway_process(f"127.0.0.1:{queue.port}", ADMIN_KEY, QUEUE_ADMIN_TOKEN=ADMIN_TOKEN)
            )
            yield Stack(url, queue, gateway.port)
    finally:
        drop_database(name)


def documents(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    found, position = [], 0
    while position < len(text.rstrip()):
        while text[position].isspace():
            position += 1
        document, position = decoder.raw_decode(text, position)
        found.append(document)
    return found


def trail(job: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    return [
        (e["action"], e["role"], e["credential"], e["operator"], e["outcome"])
        for e in job["audit_trail"]
    ]


BY_GATEWAY = ("admin", "QUEUE_ADMIN_TOKEN", "gateway 127.0.0.1")


def test_6_1_cancel_is_recorded_with_who_did_it(stack: Stack) -> None:
    output = stack.shell(
        """
# Create a new job
JOB_ID=$(curl -s -X POST http://localhost:3000/api/ingest/enqueue \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{"source_type": "s3", "s3_key": "videos/to-cancel.mp4"}' | jq -r '.job_id')

# Cancel it
curl -s -X POST "http://localhost:3000/api/ingest/jobs/$JOB_ID" \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -H "X-Operator: alice" \\
  -d '{"action": "cancel"}'
"""
    )
    answer = documents(output)[-1]
    assert answer["job"]["status"] == "CANCELLED", answer
    job = stack.job(answer["job"]["id"])
    assert trail(job) == [
        ("enqueue", *BY_GATEWAY, "ok"),
        ("cancel", "admin", "QUEUE_ADMIN_TOKEN", "gateway 127.0.0.1 (alice)", "ok"),
    ]
    first, second = job["audit_trail"]
    assert first["at"] <= second["at"]

    # A refused action is recorded too, with why.
    again = stack.shell(
        f"""curl -s -o /dev/null -w '%{{http_code}}' -X POST \\
  "http://localhost:3000/api/ingest/jobs/{job["id"]}" -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" -d '{{"action": "cancel"}}'"""
    )
    assert again == "409"
    assert trail(stack.job(job["id"]))[-1] == (
        "cancel",
        *BY_GATEWAY,
        "FAILED_PRECONDITION:INVALID_TRANSITION",
    )


def test_6_2_retry_is_recorded_and_queryable_in_the_table(stack: Stack) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        failed = insert_job(conn, status="FAILED", attempts=5, error_code="S3_OBJECT_NOT_FOUND")
    output = stack.shell(
        """
# Find a failed job
FAILED_ID=$(curl -s "http://localhost:3000/api/ingest/jobs?status=FAILED" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" | jq -r '.jobs[0].id')

# Retry it
curl -s -X POST "http://localhost:3000/api/ingest/jobs/$FAILED_ID" \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{"action": "retry"}'
"""
    )
    answer = documents(output)[-1]
    assert (answer["job"]["id"], answer["job"]["status"]) == (str(failed["id"]), "QUEUED")
    assert trail(stack.job(str(failed["id"]))) == [("retry", *BY_GATEWAY, "ok")]
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT action, role, credential, operator, outcome FROM admin_audit WHERE job_id = %s",
            (failed["id"],),
        ).fetchall()
    assert rows == [("retry", *BY_GATEWAY, "ok")]


def test_release_stale_needs_the_admin_role_and_is_recorded(stack: Stack) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        stale = insert_job(conn, status="RUNNING", seconds_ago={"last_heartbeat_at": 3600})
    env = {"QUEUE_ADDR": f"127.0.0.1:{stack.queue.port}", "QUEUE_AUTH_TOKEN": ""}
    with worker_process(
        ["--release-stale"], {**env, "QUEUE_WORKER_TOKEN": WORKER_TOKEN}, "worker-only"
    ) as refused:
        assert refused.wait() != 0
    assert "refused the token (QUEUE_ADMIN_TOKEN): UNAUTHENTICATED" in refused.output
    with worker_process(
        ["--release-stale"],
        {**env, "QUEUE_WORKER_TOKEN": WORKER_TOKEN, "QUEUE_ADMIN_TOKEN": ADMIN_TOKEN},
        "operator",
    ) as operator:
        assert operator.wait() == 0, operator.output
    assert "Released 1 stale jobs" in operator.output
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT role, credential, operator, outcome FROM admin_audit WHERE job_id = %s",
            (stale["id"],),
        ).fetchall()
    assert rows == [("admin", "QUEUE_ADMIN_TOKEN", "", "released:HEARTBEAT_TIMEOUT")], rows
