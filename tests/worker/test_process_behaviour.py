"""The worker process (`python -m worker_service`, by its documented command) beyond what the
checklist shows: tests/e2e/test_checklist.py runs the checklist's steps once, against the real
pipeline; these prove what those steps leave unproved, with the small test pipeline
(tests/worker/pipelines.py) whose stages a test can hold at a gate or make fail on request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.jobs import fetch_job, insert_job
from tests.support.processes import Process, lines_in_order
from tests.support.waiting import wait_for
from tests.worker.conftest import Queue, held_job, put_object

pytestmark = pytest.mark.integration


def scalar(db: psycopg.Connection[Any], query: str) -> Any:
    row = db.execute(query).fetchone()  # type: ignore[call-overload]
    return row[0] if row else None


# -- one job's run ---------------------------------------------------------------------------


def test_a_bearer_token_on_both_sides_is_sent_and_never_printed(
    queue_factory: Callable[..., Queue],
    worker_factory: Callable[..., Process],
    objects: Path,
    db: psycopg.Connection[Any],
) -> None:
    # The queue service refuses any call without the token: the job can only succeed if the
    # bearer metadata went with every call (claim, heartbeats, advert, complete).
    queue = queue_factory(QUEUE_AUTH_TOKEN="s3cret-token")
    put_object(objects, "videos/test-ad.mp4")
    job_id = queue.enqueue({"source_type": "s3", "s3_key": "videos/test-ad.mp4"})

    worker = worker_factory(queue, "--once", "--limit", "1", QUEUE_AUTH_TOKEN="s3cret-token")

    assert worker.wait() == 0, worker.output
    assert "s3cret-token" not in worker.output
    row = fetch_job(db, job_id)
    assert row["status"] == "SUCCEEDED"


def test_a_finished_job_s_working_folder_is_deleted(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    db: psycopg.Connection[Any],
) -> None:
    put_object(objects, "videos/test-ad.mp4")
    job_id = queue.enqueue({"source_type": "s3", "s3_key": "videos/test-ad.mp4"})

    worker = worker_factory(queue, "--once", "--limit", "1")

    assert worker.wait() == 0, worker.output
    row = fetch_job(db, job_id)
    assert row["status"] == "SUCCEEDED"
    # The per-job workdir is gone once the job is done.
    assert not Path(row["output"]["workdir"]).exists()


# -- retries and failures --------------------------------------------------------------------


def test_one_long_running_worker_takes_each_retry_once_its_backoff_passes(
    queue: Queue, worker_factory: Callable[..., Process], db: psycopg.Connection[Any]
) -> None:
    job_id = queue.enqueue({"source_type": "s3", "s3_key": "nonexistent/fake-video.mp4"})

    first = worker_factory(queue, "--once", "--limit", "1", name="first")
    assert first.wait() == 0, first.output
    first.wait_for_line(rf"Job {job_id[:8]} failed in .*: S3_NOT_FOUND: .* \(will retry in ")
    row = fetch_job(db, job_id)
    assert (row["status"], row["attempts"], row["error_code"]) == ("RETRY", 1, "S3_NOT_FOUND")
    assert row["run_after"] > row["updated_at"]  # backoff: not runnable at once

    # The remaining four attempts, each claimed once its (test-short) backoff has passed.
    rest = worker_factory(queue, "--limit", "4", "--poll-interval", "2", name="rest")
    assert rest.wait() == 0, rest.output
    row = fetch_job(db, job_id)
    assert (row["status"], row["attempts"]) == ("FAILED", 5)
    assert [entry["attempt"] for entry in row["errors"]] == [1, 2, 3, 4, 5]
    rest.wait_for_line(r"\(attempt 5/5\)")
    rest.wait_for_line(r"S3_NOT_FOUND: .* \(will not retry: 5/5 attempts used\)")
    lines_in_order(rest, [r"Jobs processed: 4", r"Jobs succeeded: 0", r"Jobs failed: 4"])


def test_permanent_errors_fail_at_once(
    queue: Queue, worker_factory: Callable[..., Process], objects: Path, db: psycopg.Connection[Any]
) -> None:
    put_object(objects, "videos/bad.mp4")
    bad_media = queue.enqueue(
        {"source_type": "s3", "s3_key": "videos/bad.mp4", "fail": "permanent"}
    )
    # The queue service refuses these (one input schema); a job can still reach the table from
    # psql, and the pipeline fails it at once.
    bad_input = str(insert_job(db, input={"source_type": "s3"})["id"])
    unknown = str(insert_job(db, input={"source_type": "ftp", "url": "ftp://example/x.mp4"})["id"])
    crash = queue.enqueue({"source_type": "s3", "s3_key": "videos/bad.mp4", "fail": "crash"})

    worker = worker_factory(queue, "--once", "--concurrency", "4")

    assert worker.wait() == 0, worker.output
    for job_id, code in (
        (bad_media, "UNSUPPORTED_MEDIA"),
        (bad_input, "INVALID_INPUT"),
        (unknown, "INVALID_INPUT"),
    ):
        row = fetch_job(db, job_id)
        assert (row["status"], row["attempts"], row["error_code"]) == ("FAILED", 1, code), row
    worker.wait_for_line(
        rf"Job {bad_input[:8]} failed .*INVALID_INPUT: source_type s3 needs an "
        r"s3_key \(will not retry: permanent error\)"
    )
    # An unclassified exception is assumed transient: retried, with its type in last_error.
    row = fetch_job(db, crash)
    assert (row["status"], row["error_code"]) == ("RETRY", "UNEXPECTED_ERROR")
    assert row["last_error"] == "ValueError: a bug in a stage"
    lines_in_order(worker, [r"Jobs processed: 4", r"Jobs succeeded: 0", r"Jobs failed: 4"])


# -- two workers ------------------------------------------------------------------------------


def test_two_workers_racing_for_jobs_never_share_one(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    results: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    gate = tmp_path / "gate"
    for i in range(1, 6):
        held_job(queue, objects, gate, f"videos/test-{i}.mp4")

    one = worker_factory(queue, "--limit", "1", "--poll-interval", "2", name="one", WORKER_ID="w1")
    two = worker_factory(queue, "--limit", "1", "--poll-interval", "2", name="two", WORKER_ID="w2")
    # Both hold a job at the same time before either may finish: the claims really race.
    wait_for(
        lambda: (
            scalar(db, "SELECT count(*) FROM ingestion_jobs WHERE stage = 'wait_for_gate'") == 2
        ),
        what="both workers holding a job",
    )
    gate.touch()
    assert one.wait() == 0, one.output
    assert two.wait() == 0, two.output

    rows = db.execute(
        "SELECT id, locked_by, status, attempts FROM ingestion_jobs "
        "WHERE status = 'SUCCEEDED' ORDER BY completed_at DESC LIMIT 10"
    ).fetchall()
    assert sorted(row[1] for row in rows) == ["w1", "w2"]
    assert all(row[3] == 1 for row in rows)
    assert db.execute(
        "SELECT count(*) FROM ingestion_jobs WHERE status = 'QUEUED' AND attempts = 0"
    ).fetchone() == (3,)
    # Exactly one persisted record per processed job: nothing was run twice.
    assert sorted(p.name for p in results.iterdir()) == sorted(f"{row[0]}.1.json" for row in rows)


# -- the operator's commands -----------------------------------------------------------------


@pytest.fixture
def still_queue(queue_factory: Callable[..., Queue]) -> Queue:
    """A queue service that leaves inserted rows as they are: the reaper is off (the operator's
    command is what releases a job) and no heartbeat the tests write is ever too old."""
    return queue_factory(STALE_SWEEP_INTERVAL_SECONDS="0", HEARTBEAT_TIMEOUT_SECONDS="120")


def test_a_fresh_heartbeat_is_never_released(
    still_queue: Queue, worker_factory: Callable[..., Process], db: psycopg.Connection[Any]
) -> None:
    stale = insert_job(
        db, status="RUNNING", locked_by="crashed-worker", seconds_ago={"locked_at": 3600}
    )
    fresh = insert_job(
        db,
        status="RUNNING",
        locked_by="live-worker",
        seconds_ago={"locked_at": 1, "last_heartbeat_at": 1},
    )

    command = worker_factory(still_queue, "--release-stale")

    assert command.wait() == 0, command.output
    assert command.lines == ["Released 1 stale jobs"], command.output
    row = fetch_job(db, stale["id"])
    assert row["status"] == "RETRY"
    assert "worker timed out" in row["last_error"]
    assert fetch_job(db, fresh["id"])["status"] == "RUNNING"


def test_show_running_lists_only_running_jobs_oldest_first_with_their_ages(
    still_queue: Queue, worker_factory: Callable[..., Process], db: psycopg.Connection[Any]
) -> None:
    analysing = insert_job(
        db,
        status="RUNNING",
        stage="llm_analysis",
        progress=0.6,
        seconds_ago={"locked_at": 120, "processing_started_at": 120, "last_heartbeat_at": 5},
    )
    transcribing = insert_job(
        db,
        status="RUNNING",
        stage="transcription",
        progress=0.3,
        seconds_ago={"locked_at": 60, "processing_started_at": 60, "last_heartbeat_at": 2},
    )
    insert_job(db, status="QUEUED")

    command = worker_factory(still_queue, "--show-running")

    assert command.wait() == 0, command.output
    assert command.lines[0] == "Running jobs: 2", command.output
    # The clock moves on while the command starts: allow a few seconds on each age.
    line = r"  {short}\.\.\.: stage={stage} progress={pct}% running=(\d+)s heartbeat_age=(\d+)s"
    for text, (job, stage, pct, running, age) in zip(
        command.lines[1:],
        [(analysing, "llm_analysis", 60, 120, 5), (transcribing, "transcription", 30, 60, 2)],
        strict=True,
    ):
        match = re.fullmatch(line.format(short=str(job["id"])[:8], stage=stage, pct=pct), text)
        assert match, (text, command.output)
        assert running <= int(match[1]) <= running + 5
        assert age <= int(match[2]) <= age + 5


# -- heartbeats -------------------------------------------------------------------------------


def test_the_heartbeat_is_renewed_while_a_stage_blocks(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    gate = tmp_path / "gate"
    job_id = held_job(queue, objects, gate, "videos/heartbeat.mp4")

    worker = worker_factory(queue, "--limit", "1", "--poll-interval", "5")

    def heartbeat() -> tuple[Any, ...] | None:
        return db.execute(
            "SELECT stage, progress, last_heartbeat_at, "
            "extract(epoch FROM now() - last_heartbeat_at) FROM ingestion_jobs "
            "WHERE id = %s AND status = 'RUNNING' AND stage = 'wait_for_gate'",
            (job_id,),
        ).fetchone()

    first = wait_for(heartbeat, what="the job held at the gate")
    # The heartbeat keeps being renewed while the stage blocks: the age stays far under 30 s.
    later = wait_for(
        lambda: (row := heartbeat()) is not None and row[2] > first[2] and row, what="a newer beat"
    )
    assert later[3] < 30
    assert 0 < later[1] < 1  # progress over all stages, mid-way
    gate.touch()
    assert worker.wait() == 0, worker.output
