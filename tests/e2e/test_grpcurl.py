"""The queue service driven the way its users do: the real grpcurl binary against
`python -m queue_service`, with no .proto files at hand (server reflection)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.jobs import fetch_job, insert_job
from tests.support.processes import Process, queue_service_process

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")

pytestmark = pytest.mark.e2e

HEARTBEAT = "jobqueue.v1.QueueService/Heartbeat"


@pytest.fixture
def service(database_url: str) -> Iterator[Process]:
    with queue_service_process(database_url) as process:
        yield process


def grpcurl(
    service: Process, *words: str, data: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`grpcurl -plaintext [-d DATA] HOST:PORT WORDS...`, as a user types it."""
    target = f"127.0.0.1:{service.port}"
    options = ["-d", data] if data is not None else []
    result = subprocess.run(
        [GRPCURL, "-plaintext", *options, target, *words],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_list_shows_every_service(service: Process) -> None:
    services = grpcurl(service, "list").stdout.split()
    assert {"jobqueue.v1.QueueService", "jobqueue.v1.AdminService", "grpc.health.v1.Health"} <= set(
        services
    )


def test_describe_shows_the_documented_contract(service: Process) -> None:
    described = grpcurl(service, "describe", "jobqueue.v1.QueueService").stdout
    for rpc in ("Claim", "Heartbeat", "Complete", "Fail"):
        assert f"rpc {rpc} (" in described
    assert "stream .jobqueue.v1.HeartbeatRequest" in described
    message = grpcurl(service, "describe", "jobqueue.v1.Job").stdout
    assert "int64 lease" in message and "string idempotency_key" in message


def test_enqueue_with_json_then_read_it_back(service: Process, db: psycopg.Connection[Any]) -> None:
    request = json.dumps({"input": {"source_type": "s3", "s3_key": "videos/test-ad.mp4"}})
    first = json.loads(grpcurl(service, "jobqueue.v1.AdminService/EnqueueJob", data=request).stdout)
    again = json.loads(grpcurl(service, "jobqueue.v1.AdminService/EnqueueJob", data=request).stdout)
    assert first["job"]["status"] == "JOB_STATUS_QUEUED"
    assert "alreadyExisted" not in first and "already_existed" not in first  # false is omitted
    assert again.get("alreadyExisted", again.get("already_existed")) is True
    assert again["job"]["id"] == first["job"]["id"]
    assert db.execute(
        "SELECT status FROM ingestion_jobs WHERE id = %s", (first["job"]["id"],)
    ).fetchone() == ("QUEUED",)
    fetched = json.loads(
        grpcurl(
            service,
            "jobqueue.v1.AdminService/GetJob",
            data=json.dumps({"job_id": first["job"]["id"]}),
        ).stdout
    )
    assert fetched["input"] == {"source_type": "s3", "s3_key": "videos/test-ad.mp4"}


def test_errors_come_back_as_status_codes(service: Process) -> None:
    result = grpcurl(
        service, "jobqueue.v1.AdminService/GetJob", data='{"job_id": "not-a-uuid"}', check=False
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert "job_id must be a UUID" in result.stderr


def test_health_check(service: Process) -> None:
    assert json.loads(grpcurl(service, "grpc.health.v1.Health/Check").stdout) == {
        "status": "SERVING"
    }
    named = grpcurl(
        service, "grpc.health.v1.Health/Check", data='{"service": "jobqueue.v1.QueueService"}'
    )
    assert json.loads(named.stdout) == {"status": "SERVING"}


def test_a_heartbeat_by_hand_keeps_its_job_and_a_malformed_one_is_answered_invalid(
    service: Process, db: psycopg.Connection[Any]
) -> None:
    # grpcurl sends the stream's messages and closes its side: a stream closed by its client
    # releases nothing, and each malformed beat is refused alone with the reason.
    job = insert_job(db, status="RUNNING")
    beats = "\n".join(
        json.dumps(beat)
        for beat in (
            {"job_id": str(job["id"]), "lease": 1, "stage": "by_hand", "progress": 0.5},
            {"job_id": str(job["id"]), "lease": 1, "stage": "x" * 113},
        )
    )
    answers = grpcurl(service, HEARTBEAT, data=beats).stdout
    decoder, text, parsed = json.JSONDecoder(), answers.strip(), []
    while text:
        value, end = decoder.raw_decode(text)
        parsed.append(value)
        text = text[end:].strip()
    assert [answer["action"] for answer in parsed] == [
        "HEARTBEAT_ACTION_CONTINUE",
        "HEARTBEAT_ACTION_INVALID",
    ]
    assert parsed[1]["message"] == "stage is at most 100 printable characters"
    # A grpcurl killed mid-stream, like a worker killed -9: its job is released a second later.
    # Streams are looked at in the order they ended, so by then the first one would have been.
    other = insert_job(db, status="RUNNING")
    killed = subprocess.Popen(
        [GRPCURL, "-plaintext", "-d", "@", f"127.0.0.1:{service.port}", HEARTBEAT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert killed.stdin is not None and killed.stdout is not None
    killed.stdin.write(json.dumps({"job_id": str(other["id"]), "lease": 1}) + "\n")
    killed.stdin.flush()
    while "HEARTBEAT_ACTION_CONTINUE" not in (line := killed.stdout.readline()):
        assert line, "grpcurl ended before it was answered"
    killed.kill()
    killed.wait()
    service.wait_for_line(rf"released job of a lost worker job_id={other['id']}")
    assert fetch_job(db, other["id"])["status"] == "RETRY"
    row = fetch_job(db, job["id"])
    assert (row["status"], row["stage"]) == ("RUNNING", "by_hand")
