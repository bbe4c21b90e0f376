"""The verification checklist's worker tests (2, 3, 4, 5, 10, 11, 12, 13), as written.

The mapping from DESIGN.md applies: `python -m worker_service` for `python -m tvads_rag.worker`,
and a `Queue service:` line for the `Database:` one. The pipeline is the small test pipeline
(tests/worker/pipelines.py: 4 stages): the real nine stages are another issue's.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.jobs import fetch_job, insert_job
from tests.support.processes import Process
from tests.support.waiting import wait_for
from tests.worker.conftest import Queue, put_object
from tests.worker.pipelines import STAGE_NAMES

pytestmark = pytest.mark.e2e

JOB_LINE = r"Job {short} succeeded in \d+\.\d+s: ad_id=[0-9a-f-]{{36}}$"


def scalar(db: psycopg.Connection[Any], query: str) -> Any:
    row = db.execute(query).fetchone()  # type: ignore[call-overload]
    return row[0] if row else None


def assert_lines_in_order(process: Process, patterns: list[str]) -> None:
    """Every pattern matches a whole line, in this order."""
    lines = process.lines
    position = 0
    for pattern in patterns:
        regex = re.compile(pattern)
        while position < len(lines) and not regex.fullmatch(lines[position]):
            position += 1
        assert position < len(lines), f"no line {pattern!r} in order; output:\n{process.output}"
        position += 1


def test_2_worker_processes_one_job_and_prints_the_checklist_lines(
    queue_factory: Callable[..., Queue],
    worker_factory: Callable[..., Process],
    objects: Path,
    db: psycopg.Connection[Any],
) -> None:
    # With a token on both sides, so the bearer metadata is exercised on every call.
    queue = queue_factory(QUEUE_AUTH_TOKEN="s3cret-token")
    put_object(objects, "videos/test-ad.mp4")
    job_id = queue.enqueue({"source_type": "s3", "s3_key": "videos/test-ad.mp4"})

    worker = worker_factory(queue, "--once", "--limit", "1", QUEUE_AUTH_TOKEN="s3cret-token")

    assert worker.wait() == 0, worker.output
    short = job_id[:8]
    assert_lines_in_order(
        worker,
        [
            r"TellyAds RAG Worker Starting",
            re.escape(f"Queue service: {queue.addr}"),
            r"Worker ID: [\w.-]+-\d+-[0-9a-f]{6}",
            r"Pipeline initialized with 4 stages",
            r"Worker ready - starting poll loop",
            re.escape(f"Processing job {short}... (attempt 1/5): s3:videos/test-ad.mp4"),
            JOB_LINE.format(short=short),
            r"Jobs processed: 1",
            r"Jobs succeeded: 1",
            r"Jobs failed: 0",
        ],
    )
    assert "s3cret-token" not in worker.output
    row = fetch_job(db, job_id)
    assert row["status"] == "SUCCEEDED"
    assert row["stage"] == "succeeded"
    assert row["attempts"] == 1
    assert row["output"]["ad_id"] in worker.output
    assert set(row["output"]["stage_timings"]) == set(STAGE_NAMES)
    # The advert went through the queue service's AdvertService, and its id is the ad_id.
    advert = db.execute(
        "SELECT source_key, job_id FROM adverts WHERE id = %s", (row["output"]["ad_id"],)
    ).fetchone()
    assert advert == ("s3:videos/test-ad.mp4", row["id"])
    # The per-job workdir is gone once the job is done.
    assert not Path(row["output"]["workdir"]).exists()


def test_3_missing_object_retries_with_backoff_then_dead_letters(
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
    assert_lines_in_order(rest, [r"Jobs processed: 4", r"Jobs succeeded: 0", r"Jobs failed: 4"])


def test_3_permanent_errors_fail_at_once(
    queue: Queue, worker_factory: Callable[..., Process], objects: Path, db: psycopg.Connection[Any]
) -> None:
    put_object(objects, "videos/bad.mp4")
    bad_media = queue.enqueue(
        {"source_type": "s3", "s3_key": "videos/bad.mp4", "fail": "permanent"}
    )
    bad_input = queue.enqueue({"source_type": "s3"})
    unknown = queue.enqueue({"source_type": "ftp", "url": "ftp://example/x.mp4"})
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
    assert_lines_in_order(worker, [r"Jobs processed: 4", r"Jobs succeeded: 0", r"Jobs failed: 4"])


def test_4_two_workers_never_process_a_job_twice(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    results: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    gate = tmp_path / "gate"
    jobs = []
    for i in range(1, 6):
        put_object(objects, f"videos/test-{i}.mp4")
        jobs.append(
            queue.enqueue(
                {"source_type": "s3", "s3_key": f"videos/test-{i}.mp4", "gate": str(gate)}
            )
        )

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


def test_5_release_stale_releases_a_job_locked_too_long(
    queue_factory: Callable[..., Queue],
    worker_factory: Callable[..., Process],
    db: psycopg.Connection[Any],
) -> None:
    # The reaper is off: the operator's command is what releases the job.
    queue = queue_factory(STALE_SWEEP_INTERVAL_SECONDS="0", HEARTBEAT_TIMEOUT_SECONDS="120")
    stale = insert_job(
        db, status="RUNNING", locked_by="crashed-worker", seconds_ago={"locked_at": 3600}
    )
    fresh = insert_job(
        db,
        status="RUNNING",
        locked_by="live-worker",
        seconds_ago={"locked_at": 1, "last_heartbeat_at": 1},
    )

    command = worker_factory(queue, "--release-stale")

    assert command.wait() == 0, command.output
    assert command.lines == ["Released 1 stale jobs"], command.output
    row = fetch_job(db, stale["id"])
    assert row["status"] == "RETRY"
    assert "worker timed out" in row["last_error"]
    assert fetch_job(db, fresh["id"])["status"] == "RUNNING"


def test_11_release_stale_uses_the_heartbeat(
    queue_factory: Callable[..., Queue],
    worker_factory: Callable[..., Process],
    db: psycopg.Connection[Any],
) -> None:
    queue = queue_factory(STALE_SWEEP_INTERVAL_SECONDS="0", HEARTBEAT_TIMEOUT_SECONDS="120")
    job = insert_job(
        db,
        status="RUNNING",
        locked_by="crashed-worker",
        stage="llm_analysis",
        seconds_ago={"locked_at": 600, "last_heartbeat_at": 600},
    )

    command = worker_factory(queue, "--release-stale")

    assert command.wait() == 0, command.output
    assert command.lines == ["Released 1 stale jobs"], command.output
    row = fetch_job(db, job["id"])
    assert (row["status"], row["stage"], row["error_code"]) == (
        "RETRY",
        "released_stale",
        "HEARTBEAT_TIMEOUT",
    )


def test_12_show_running_prints_each_running_job(
    queue_factory: Callable[..., Queue],
    worker_factory: Callable[..., Process],
    db: psycopg.Connection[Any],
) -> None:
    queue = queue_factory(STALE_SWEEP_INTERVAL_SECONDS="0", HEARTBEAT_TIMEOUT_SECONDS="120")
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

    command = worker_factory(queue, "--show-running")

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


def test_13_concurrency_never_exceeds_the_limit(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    tmp_path: Path,
    database_url: str,
    db: psycopg.Connection[Any],
) -> None:
    gate = tmp_path / "gate"
    for i in range(1, 6):
        put_object(objects, f"videos/concurrent-{i}.mp4")
    worker = worker_factory(queue, "--concurrency", "2", "--limit", "5")
    worker.wait_for_line("Worker ready")
    jobs = [
        queue.enqueue(
            {"source_type": "s3", "s3_key": f"videos/concurrent-{i}.mp4", "gate": str(gate)}
        )
        for i in range(1, 6)
    ]

    # Watch the running count for the whole run, from a connection of its own.
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM ingestion_jobs WHERE status = 'RUNNING'"
                ).fetchone()
                seen.append(row[0] if row else 0)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        wait_for(lambda: max(seen, default=0) == 2, what="two jobs running")
        gate.touch()
        assert worker.wait() == 0, worker.output
    finally:
        done.set()
        watcher.join()

    assert max(seen) == 2, seen
    statuses = db.execute(
        "SELECT status, attempts, count(*) FROM ingestion_jobs GROUP BY 1, 2"
    ).fetchall()
    assert statuses == [("SUCCEEDED", 1, 5)]
    assert_lines_in_order(worker, [r"Jobs processed: 5", r"Jobs succeeded: 5", r"Jobs failed: 0"])
    assert len(jobs) == 5


def test_10_heartbeats_flow_and_stages_advance(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    # Record every stage a job's row takes, as the database sees it.
    db.execute("CREATE TABLE stage_log (seq bigserial, job_id uuid, stage text)")
    db.execute(
        """
        CREATE FUNCTION log_stage() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.stage IS DISTINCT FROM OLD.stage THEN
                INSERT INTO stage_log (job_id, stage) VALUES (NEW.id, NEW.stage);
            END IF;
            RETURN NEW;
        END $$
        """
    )
    db.execute(
        "CREATE TRIGGER log_stage AFTER UPDATE ON ingestion_jobs "
        "FOR EACH ROW EXECUTE FUNCTION log_stage()"
    )
    gate = tmp_path / "gate"
    put_object(objects, "videos/heartbeat.mp4")
    job_id = queue.enqueue(
        {"source_type": "s3", "s3_key": "videos/heartbeat.mp4", "gate": str(gate)}
    )

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

    stages = [row[0] for row in db.execute("SELECT stage FROM stage_log ORDER BY seq")]
    expected = ["claimed", "validating_input", "pipeline_running", *STAGE_NAMES, "succeeded"]
    # Beats that arrive together are written together (latest wins), so a fleeting stage may
    # never reach the row; what reaches it comes in order, held stages and the end included.
    assert (stages[0], stages[-1]) == ("claimed", "succeeded"), stages
    assert "wait_for_gate" in stages, stages
    assert stages == sorted(stages, key=expected.index), stages
    assert fetch_job(db, job_id)["stage"] == "succeeded"
