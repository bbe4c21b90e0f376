"""The verification checklist (spec/verification-checklist.md), end to end, as written.

Every process is started by its documented command: `python -m queue_service`,
`python -m gateway`, `python -m worker_service ...` running the real nine-stage pipeline against
a local S3 server holding a real (generated) advert. The curl snippets run with bash, the SQL
with psql, and the expected results are asserted. DESIGN.md's mapping applies: port 3000 is the
gateway's (a free port here), `python -m worker_service` stands for `python -m tvads_rag.worker`,
and the worker prints `Queue service: ADDR` where the checklist shows `Database: ...`.

The tests run in the checklist's order and build on each other's state, as the checklist does
(Test 6 retries the job that Test 3 dead-lettered; the Cleanup section clears the first half's
jobs before Tests 10-13). Tests 8 and 9 are the project's own test suites, not steps to replay.
"""

from __future__ import annotations

import json
import re
import signal
import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.conftest import Stack, psql_columns, psql_rows, watched_samples
from tests.support.databases import psql
from tests.support.processes import ROOT, Process, lines_in_order
from tests.support.waiting import wait_for
from worker_service.pipeline.factory import STAGE_NAMES

pytestmark = pytest.mark.e2e

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# Generous: the first run in a worker loads the local embedding model; two cores are shared.
WORKER_TIMEOUT = 150.0
STATUSES = ("QUEUED", "RUNNING", "SUCCEEDED", "RETRY", "FAILED", "CANCELLED")


class Story:
    """What earlier checklist tests leave for later ones (job ids, worker ids)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value

    def __getitem__(self, key: str) -> Any:
        if key not in self.values:
            pytest.skip(f"needs {key!r} from an earlier checklist test, which did not finish")
        return self.values[key]


@pytest.fixture(scope="module")
def story() -> Story:
    return Story()


# -- helpers ---------------------------------------------------------------------------------


def json_documents(text: str) -> list[Any]:
    """Every JSON document in `text`, in order: curl prints bodies back to back, jq one per
    value (pretty-printed), and the status lines of `Stack.shell(with_status=True)` between."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    position = 0
    text = re.sub(r"^HTTP_STATUS:\d+$", "", text, flags=re.MULTILINE)
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return documents
        document, position = decoder.raw_decode(text, position)
        documents.append(document)


def statuses(output: str) -> list[int]:
    return [int(code) for code in re.findall(r"^HTTP_STATUS:(\d+)$", output, flags=re.MULTILINE)]


def enqueue_command(body: dict[str, Any]) -> str:
    """The checklist's enqueue curl, with another body."""
    return f"""
curl -X POST http://localhost:3000/api/ingest/enqueue \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{json.dumps(body)}'
"""


def enqueue(stack: Stack, body: dict[str, Any]) -> str:
    created = json_documents(stack.shell(enqueue_command(body)))[-1]
    assert created["status"] == "QUEUED" and created["already_existed"] is False, created
    return str(created["job_id"])


def get_job(stack: Stack, job_id: str) -> dict[str, Any]:
    """Step 2.2's command, for any job."""
    output = stack.shell(
        f"""
curl http://localhost:3000/api/ingest/jobs/{job_id} \\
  -H "X-Admin-Key: $ADMIN_API_KEY"
"""
    )
    job: dict[str, Any] = json.loads(output)["job"]
    return job


def run_worker(stack: Stack, *args: str, name: str = "worker") -> Process:
    """A worker started by its documented command, waited on until it exits 0."""
    worker = stack.worker(*args, name=name)
    code = worker.wait(WORKER_TIMEOUT)
    assert code == 0, f"{name} exited {code}; output:\n{worker.output}"
    return worker


def release_stale(stack: Stack) -> Process:
    command = run_worker(stack, "--release-stale", name="release-stale")
    # Its only line: logs go to stderr only at WARNING and above, and there should be none.
    assert command.lines == ["Released 1 stale jobs"], command.output
    return command


def substitute(snippet: str, job_id: str) -> str:
    return snippet.replace("JOB_ID_HERE", job_id)


def stage_rank(stage: str) -> int:
    return ["claimed", "validating_input", "pipeline_running", *STAGE_NAMES, "succeeded"].index(
        stage
    )


# -- Prerequisites ---------------------------------------------------------------------------


EXPECTED_COLUMNS = {
    "id", "status", "priority", "attempts", "max_attempts", "locked_at", "locked_by",
    "run_after", "processing_started_at", "processing_completed_at", "last_heartbeat_at",
    "stage", "progress", "input", "output", "idempotency_key",
}  # fmt: skip
EXPECTED_FUNCTIONS = {
    "claim_jobs", "enqueue_job", "complete_job", "fail_job", "cancel_job", "release_stale_jobs",
    "update_job_heartbeat",
}  # fmt: skip
EXPECTED_VIEWS = {
    "dead_letter_jobs", "job_queue_stats", "running_jobs_monitor", "job_timing_stats",
    "stage_distribution",
}  # fmt: skip


def test_prerequisites_migrations_apply_with_bare_psql_and_create_everything(
    empty_database: str,
) -> None:
    # Step 1, twice: re-applying must be safe (an operator re-runs a deploy script).
    for _ in range(2):
        for migration in ("003_ingestion_jobs.sql", "004_job_queue_heartbeat.sql"):
            path = ROOT / "migrations" / migration
            psql(empty_database, "", "-q", "-f", str(path))

    # Step 2: the table, with all the columns the checklist names.
    columns = psql_rows(
        psql(
            empty_database,
            """
SELECT column_name, data_type
FROM information_schema.columns
WHERE table_name = 'ingestion_jobs'
ORDER BY ordinal_position;
""",
            "--csv",
        )
    )
    names = [row["column_name"] for row in columns]
    assert set(names) >= EXPECTED_COLUMNS, sorted(EXPECTED_COLUMNS - set(names))
    assert len(names) == len(set(names))
    types = {row["column_name"]: row["data_type"] for row in columns}
    assert (types["id"], types["input"], types["output"]) == ("uuid", "jsonb", "jsonb")

    # Step 3: the state machine's functions.
    functions = psql_rows(
        psql(
            empty_database,
            """
SELECT routine_name
FROM information_schema.routines
WHERE routine_schema = 'public'
  AND routine_name IN (
    'claim_jobs', 'enqueue_job', 'complete_job', 'fail_job',
    'cancel_job', 'release_stale_jobs', 'update_job_heartbeat'
  );
""",
            "--csv",
        )
    )
    assert {row["routine_name"] for row in functions} == EXPECTED_FUNCTIONS

    # Step 4: the views.
    views = psql_rows(
        psql(
            empty_database,
            """
SELECT table_name
FROM information_schema.views
WHERE table_schema = 'public'
  AND table_name IN (
    'dead_letter_jobs', 'job_queue_stats',
    'running_jobs_monitor', 'job_timing_stats', 'stage_distribution'
  );
""",
            "--csv",
        )
    )
    assert sorted(row["table_name"] for row in views) == sorted(EXPECTED_VIEWS)


# -- Test 1: Create a Job via API --------------------------------------------------------------

ENQUEUE_TEST_AD = """
curl -X POST http://localhost:3000/api/ingest/enqueue \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{"source_type": "s3", "s3_key": "videos/test-ad.mp4"}'
"""


def test_1_create_a_job_via_the_api(stack: Stack, story: Story) -> None:
    # Step 1.1: a new job is 201 Created, QUEUED.
    output = stack.shell(ENQUEUE_TEST_AD, with_status=True)
    assert statuses(output) == [201], output
    created = json_documents(output)[0]
    assert set(created) == {"job_id", "status", "already_existed"}, created
    assert re.fullmatch(UUID, created["job_id"]), created
    assert (created["status"], created["already_existed"]) == ("QUEUED", False)
    job_id = created["job_id"]

    # Step 1.2: the same request again is the same job (200: nothing was created).
    output = stack.shell(ENQUEUE_TEST_AD, with_status=True)
    assert statuses(output) == [200], output
    assert json_documents(output)[0] == {
        "job_id": job_id,
        "status": "QUEUED",
        "already_existed": True,
    }
    assert stack.query("SELECT count(*) FROM ingestion_jobs") == [{"count": "1"}]

    # Step 1.3: list, with stats.
    listed = json.loads(
        stack.shell(
            """
curl http://localhost:3000/api/ingest/jobs?stats=true \\
  -H "X-Admin-Key: $ADMIN_API_KEY"
"""
        )
    )
    assert [job["id"] for job in listed["jobs"]] == [job_id], listed
    assert listed["jobs"][0]["input"] == {"source_type": "s3", "s3_key": "videos/test-ad.mp4"}
    assert listed["stats"]["by_status"]["QUEUED"] == 1, listed
    assert listed["stats"]["total"] == 1, listed
    story["test_ad_job"] = job_id


# -- Test 2: Run Worker Locally ----------------------------------------------------------------


def test_2_worker_processes_the_job_with_the_real_pipeline(stack: Stack, story: Story) -> None:
    job_id = story["test_ad_job"]
    short = job_id[:8]

    # Step 2.1.
    worker = run_worker(stack, "--once", "--limit", "1")

    lines_in_order(
        worker,
        [
            r"TellyAds RAG Worker Starting",
            re.escape(f"Queue service: {stack.queue_addr}"),
            r"Worker ID: [\w.-]+-\d+-[0-9a-f]{6}",
            r"Pipeline initialized with 9 stages",
            r"Worker ready - starting poll loop",
            re.escape(f"Processing job {short}... (attempt 1/5): s3:videos/test-ad.mp4"),
            rf"Job {short} succeeded in \d+\.\ds: ad_id={UUID}",
            r"Jobs processed: 1",
            r"Jobs succeeded: 1",
            r"Jobs failed: 0",
        ],
    )
    ad_id = worker.wait_for_line(rf"Job {short} succeeded in .*: ad_id=({UUID})$", 0)[1]

    # Step 2.2: SUCCEEDED, and output names the advert.
    job = get_job(stack, job_id)
    assert (job["status"], job["stage"], job["attempts"]) == ("SUCCEEDED", "succeeded", 1), job
    assert job["output"]["ad_id"] == ad_id, job
    assert set(job["output"]["stage_timings"]) == set(STAGE_NAMES), job["output"]
    # Real media work on the 8-second sample; without OPENAI_API_KEY the OpenAI stages say
    # they were skipped instead of pretending.
    assert job["output"]["media"]["duration_seconds"] == 8, job["output"]
    assert job["output"]["keyframes"] >= 1, job["output"]
    assert {"transcription", "llm_analysis"} <= set(job["output"]["skipped"]), job["output"]
    # The advert really was stored (by the queue service, for the worker), under that id.
    adverts = stack.query(f"SELECT source_key, job_id FROM adverts WHERE id = '{ad_id}'")
    assert adverts == [{"source_key": "s3:videos/test-ad.mp4", "job_id": job_id}], adverts


# -- Test 3: Transient Error and Retry -------------------------------------------------------


def test_3_a_missing_object_is_retried_with_backoff_then_dead_lettered(
    stack: Stack, story: Story
) -> None:
    # Step 3.1.
    output = stack.shell(
        """
# Create job with invalid S3 key that will fail on video load
curl -X POST http://localhost:3000/api/ingest/enqueue \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{"source_type": "s3", "s3_key": "nonexistent/fake-video.mp4"}'
"""
    )
    job_id = json_documents(output)[0]["job_id"]
    short = job_id[:8]

    # Step 3.2.
    first = run_worker(stack, "--once", "--limit", "1", name="attempt-1")
    first.wait_for_line(
        rf"Job {short} failed in \d+\.\ds: S3_OBJECT_NOT_FOUND: .* \(will retry in \d+\.\ds\)", 0
    )
    lines_in_order(first, [r"Jobs processed: 1", r"Jobs succeeded: 0", r"Jobs failed: 1"])

    # Step 3.3, first attempt: RETRY, attempt 1 counted, run_after after the failure (backoff).
    job = get_job(stack, job_id)
    assert (job["status"], job["attempts"], job["error_code"]) == (
        "RETRY",
        1,
        "S3_OBJECT_NOT_FOUND",
    ), job
    assert datetime.fromisoformat(job["run_after"]) > datetime.fromisoformat(job["updated_at"]), job

    # The same command again, each time the backoff has passed, until the attempts run out.
    for attempt in range(2, 6):
        wait_for(
            lambda: (
                stack.query(
                    f"SELECT run_after <= now() AS due FROM ingestion_jobs WHERE id = '{job_id}'"
                )
                == [{"due": "t"}]
            ),
            what=f"attempt {attempt}'s backoff to pass",
        )
        worker = run_worker(stack, "--once", "--limit", "1", name=f"attempt-{attempt}")
        worker.wait_for_line(re.escape(f"Processing job {short}... (attempt {attempt}/5)"), 0)

    # Step 3.3, after max attempts: FAILED (the dead letter), with every attempt's error kept.
    worker.wait_for_line(r"S3_OBJECT_NOT_FOUND: .* \(will not retry: 5/5 attempts used\)", 0)
    job = get_job(stack, job_id)
    assert (job["status"], job["attempts"], job["error_code"]) == (
        "FAILED",
        5,
        "S3_OBJECT_NOT_FOUND",
    ), job
    assert [error["attempt"] for error in job["errors"]] == [1, 2, 3, 4, 5], job["errors"]
    # A dead letter makes the queue "degraded" (Test 7's rule), seen here while it exists.
    stats = json.loads(
        stack.shell(
            """
curl http://localhost:3000/api/ingest/stats \\
  -H "X-Admin-Key: $ADMIN_API_KEY"
"""
        )
    )
    assert (stats["health"], stats["summary"]["has_dead_letter"]) == ("degraded", True), stats
    assert (stats["stats"]["by_status"]["FAILED"], stats["summary"]["failed"]) == (1, 1), stats
    story["failed_job"] = job_id


# -- Test 4: Concurrent Workers ----------------------------------------------------------------


def test_4_two_workers_in_parallel_never_process_a_job_twice(stack: Stack, story: Story) -> None:
    # Step 4.1.
    output = stack.shell(
        """
for i in {1..5}; do
  curl -X POST http://localhost:3000/api/ingest/enqueue \\
    -H "Content-Type: application/json" \\
    -H "X-Admin-Key: $ADMIN_API_KEY" \\
    -d "{\\"source_type\\": \\"s3\\", \\"s3_key\\": \\"videos/test-$i.mp4\\"}"
done
"""
    )
    created = json_documents(output)
    assert [job["already_existed"] for job in created] == [False] * 5, created
    test_jobs = {job["job_id"] for job in created}

    # Step 4.2: both started before either is waited on.
    one = stack.worker("--limit", "1", "--poll-interval", "2", name="terminal-1")
    two = stack.worker("--limit", "1", "--poll-interval", "2", name="terminal-2")
    workers = {}
    for worker in (one, two):
        code = worker.wait(WORKER_TIMEOUT)
        assert code == 0, f"{worker.name} exited {code}; output:\n{worker.output}"
        lines_in_order(worker, [r"Jobs processed: 1", r"Jobs succeeded: 1", r"Jobs failed: 0"])
        worker_id = worker.wait_for_line(r"^Worker ID: (\S+)$", 0)[1]
        job_short = worker.wait_for_line(r"^Job ([0-9a-f]{8}) succeeded in", 0)[1]
        workers[worker_id] = job_short

    # Step 4.3: each job processed exactly once (the dead-lettered job of Test 3 is the
    # checklist's "unless it failed and retried").
    output = stack.shell(
        """
# Check that each job is processed exactly once
curl "http://localhost:3000/api/ingest/jobs?limit=10" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" | jq '.jobs[] | {id, attempts, locked_by}'
"""
    )
    listed = {job["id"]: job for job in json_documents(output)}
    assert test_jobs <= set(listed), output
    attempts = {job_id: listed[job_id]["attempts"] for job_id in test_jobs}
    assert sorted(attempts.values()) == [0, 0, 0, 1, 1], listed
    assert all(
        job["attempts"] <= 1 for job_id, job in listed.items() if job_id != story["failed_job"]
    ), listed

    # Step 4.4: the two processed jobs were locked by the two different workers.
    rows = stack.query(
        """
-- In psql, check that jobs were locked by different workers
SELECT id, locked_by, status
FROM ingestion_jobs
WHERE status = 'SUCCEEDED'
ORDER BY completed_at DESC
LIMIT 10;
"""
    )
    processed = {row["id"]: row["locked_by"] for row in rows if row["id"] in test_jobs}
    assert set(processed) == {job_id for job_id, n in attempts.items() if n == 1}, rows
    assert sorted(processed.values()) == sorted(workers), (rows, workers)
    assert {job_id[:8] for job_id in processed} == set(workers.values()), (rows, workers)
    story["unprocessed_test_jobs"] = sorted(job_id for job_id, n in attempts.items() if n == 0)


# -- Test 5: Stale Job Release -----------------------------------------------------------------


def test_5_release_stale_frees_a_job_whose_worker_crashed(stack: Stack, story: Story) -> None:
    job_id = story["unprocessed_test_jobs"][0]

    # Step 5.1.
    updated = stack.psql(
        substitute(
            """
-- Manually set a job to RUNNING with old locked_at
UPDATE ingestion_jobs
SET status = 'RUNNING', locked_at = NOW() - INTERVAL '1 hour', locked_by = 'crashed-worker'
WHERE id = 'JOB_ID_HERE';
""",
            job_id,
        )
    )
    assert updated.strip() == "UPDATE 1", updated

    # Step 5.2: "Released 1 stale jobs".
    release_stale(stack)

    # Step 5.3.
    job = get_job(stack, job_id)
    assert job["status"] == "RETRY", job
    assert "worker timed out" in job["last_error"], job
    assert "crashed-worker" in job["last_error"], job


# -- Test 6: Job Actions (Cancel/Retry) ----------------------------------------------------------


def test_6_1_cancel_a_queued_job(stack: Stack) -> None:
    output = stack.shell(
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
"""
    )
    answer = json_documents(output)[-1]
    assert (answer["success"], answer["message"]) == (True, "Job cancelled successfully"), answer
    assert answer["job"]["status"] == "CANCELLED", answer
    job = get_job(stack, answer["job"]["id"])
    assert job["status"] == "CANCELLED", job
    assert job["input"] == {"source_type": "s3", "s3_key": "videos/to-cancel.mp4"}, job


def test_6_2_retry_the_failed_job(stack: Stack, story: Story) -> None:
    failed_job = story["failed_job"]
    output = stack.shell(
        """
# Find a failed job
FAILED_ID=$(curl -s "http://localhost:3000/api/ingest/jobs?status=FAILED" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" | jq -r '.jobs[0].id')

# Retry it
curl -X POST "http://localhost:3000/api/ingest/jobs/$FAILED_ID" \\
  -H "Content-Type: application/json" \\
  -H "X-Admin-Key: $ADMIN_API_KEY" \\
  -d '{"action": "retry"}'
"""
    )
    answer = json_documents(output)[-1]
    assert (answer["success"], answer["message"]) == (True, "Job queued for retry"), answer
    # The only FAILED job is Test 3's dead letter.
    assert (answer["job"]["id"], answer["job"]["status"]) == (failed_job, "QUEUED"), answer
    assert get_job(stack, failed_job)["status"] == "QUEUED"


# -- Test 7: Queue Stats -----------------------------------------------------------------------


def test_7_queue_stats_match_the_table(stack: Stack) -> None:
    answer = json.loads(
        stack.shell(
            """
curl http://localhost:3000/api/ingest/stats \\
  -H "X-Admin-Key: $ADMIN_API_KEY"
"""
        )
    )
    counted = {
        row["status"]: int(row["count"])
        for row in stack.query("SELECT status, count(*) FROM ingestion_jobs GROUP BY status")
    }
    expected = {status: counted.get(status, 0) for status in STATUSES}
    assert answer["stats"] == {"by_status": expected, "total": sum(expected.values())}, answer
    # What Tests 1-6 left: test-ad and two test-N done; two test-N waiting plus the retried
    # dead letter; the released test-N due again; the cancelled one.
    assert expected == {
        "QUEUED": 3, "RUNNING": 0, "SUCCEEDED": 3, "RETRY": 1, "FAILED": 0, "CANCELLED": 1
    }, expected  # fmt: skip

    summary = answer["summary"]
    assert summary["running"] == expected["RUNNING"]
    assert summary["pending"] == expected["QUEUED"] + expected["RETRY"]
    assert summary["failed"] == expected["FAILED"]
    assert summary["has_dead_letter"] is (expected["FAILED"] > 0)
    # The documented health rule: nothing makes the queue unhealthy here (no overdue
    # heartbeat, no job waiting 15 minutes), so FAILED jobs alone decide "degraded".
    assert summary["stale_running"] == 0 and summary["oldest_runnable_age_seconds"] < 900
    assert answer["health"] == ("degraded" if expected["FAILED"] else "healthy"), answer


# -- Cleanup -----------------------------------------------------------------------------------


def test_cleanup_removes_the_test_jobs(stack: Stack) -> None:
    output = stack.psql(
        """
-- Remove test jobs
DELETE FROM ingestion_jobs WHERE input->>'s3_key' LIKE 'videos/test%';
DELETE FROM ingestion_jobs WHERE input->>'s3_key' LIKE '%fake-video%';
DELETE FROM ingestion_jobs WHERE input->>'s3_key' LIKE '%to-cancel%';
"""
    )
    # test-ad and test-1..5; the fake video; the cancelled one.
    assert output.split() == ["DELETE", "6", "DELETE", "1", "DELETE", "1"], output
    assert stack.query("SELECT count(*) FROM ingestion_jobs") == [{"count": "0"}]


# -- Test 10: Verify Heartbeat Updates -----------------------------------------------------------

STAGE_LOG = """
CREATE TABLE e2e_stage_log (seq bigserial PRIMARY KEY, job_id uuid, stage text);
CREATE FUNCTION e2e_log_stage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.stage IS DISTINCT FROM OLD.stage THEN
        INSERT INTO e2e_stage_log (job_id, stage) VALUES (NEW.id, NEW.stage);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER e2e_log_stage AFTER UPDATE ON ingestion_jobs
    FOR EACH ROW EXECUTE FUNCTION e2e_log_stage();
"""
DROP_STAGE_LOG = """
DROP TRIGGER e2e_log_stage ON ingestion_jobs;
DROP FUNCTION e2e_log_stage();
DROP TABLE e2e_stage_log;
"""


def test_10_heartbeats_stay_fresh_and_stages_advance(stack: Stack, story: Story) -> None:
    # The checklist's Test 10 watches whatever job runs; after the Cleanup there is none, so
    # one is enqueued the usual way. Every stage the row takes is recorded by a trigger (the
    # 2-second watch cannot see stages that last milliseconds).
    stack.psql(STAGE_LOG)
    try:
        job_id = enqueue(stack, {"source_type": "s3", "s3_key": "videos/test-ad.mp4"})

        # Step 10.1: terminal 2's watch (every 0.2 s instead of 2 s), then terminal 1's worker.
        watch = stack.watch(
            """
SELECT id, stage, progress,
  EXTRACT(EPOCH FROM (NOW() - last_heartbeat_at))::int as heartbeat_age
  FROM ingestion_jobs WHERE status='RUNNING'
""",
            0.2,
            name="watch-heartbeats",
        )
        worker = stack.worker("--limit", "1", "--poll-interval", "5")
        code = worker.wait(WORKER_TIMEOUT)
        watch.stop()
        assert code == 0, worker.output
        lines_in_order(worker, [r"Jobs processed: 1", r"Jobs succeeded: 1", r"Jobs failed: 0"])

        seen = [row for sample in watched_samples(watch) for row in sample]
        assert seen, f"the watch never saw the job RUNNING; worker output:\n{worker.output}"
        assert {row["id"] for row in seen} == {job_id}, seen
        # Expected: heartbeat_age stays < 30 s while the job is processing.
        assert all(row["heartbeat_age"] != "" for row in seen), seen
        assert max(int(row["heartbeat_age"]) for row in seen) < 30, seen
        progress = [float(row["progress"]) for row in seen]
        assert progress == sorted(progress), seen
        assert {row["stage"] for row in seen} & set(STAGE_NAMES), seen

        # Step 10.2: only finished jobs now, at the final stage.
        assert stack.query(
            """
  SELECT stage, COUNT(*)
  FROM ingestion_jobs
  WHERE status IN ('RUNNING', 'SUCCEEDED')
  GROUP BY stage
"""
        ) == [{"stage": "succeeded", "count": "1"}]

        # claimed -> validating_input -> pipeline_running -> <pipeline stages> -> succeeded.
        # Beats arriving together are written together (the latest wins), so a fleeting stage
        # may never reach the row; what reaches it comes in order, first and last included.
        logged = [
            row["stage"] for row in stack.query("SELECT stage FROM e2e_stage_log ORDER BY seq")
        ]
        assert (logged[0], logged[-1]) == ("claimed", "succeeded"), logged
        assert logged == sorted(logged, key=stage_rank), logged
        assert set(logged) & set(STAGE_NAMES), logged
    finally:
        stack.psql(DROP_STAGE_LOG)
    story["heartbeat_job"] = job_id


# -- Test 11: Heartbeat-Based Stale Recovery ---------------------------------------------------


def test_11_release_stale_uses_the_heartbeat(stack: Stack, story: Story) -> None:
    # A job to play the stuck one: enqueued, never claimed (Test 11 names no job either).
    job_id = enqueue(stack, {"source_type": "s3", "s3_key": "videos/test-1.mp4"})

    # Step 11.1.
    updated = stack.psql(
        substitute(
            """
-- Set job to RUNNING with stale heartbeat
UPDATE ingestion_jobs
SET
    status = 'RUNNING',
    locked_at = NOW() - INTERVAL '10 minutes',
    locked_by = 'crashed-worker',
    last_heartbeat_at = NOW() - INTERVAL '10 minutes',
    stage = 'llm_analysis'
WHERE id = 'JOB_ID_HERE';
""",
            job_id,
        )
    )
    assert updated.strip() == "UPDATE 1", updated

    # Step 11.2.
    release_stale(stack)

    # Step 11.3.
    rows = stack.query(
        substitute(
            """
SELECT id, status, stage, last_error, error_code
FROM ingestion_jobs
WHERE id = 'JOB_ID_HERE';
""",
            job_id,
        )
    )
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["status"], row["stage"], row["error_code"]) == (
        "RETRY",
        "released_stale",
        "HEARTBEAT_TIMEOUT",
    ), row
    assert row["last_error"].startswith("worker timed out: no heartbeat for"), row
    story["released_job"] = job_id


# -- Test 12: Show Running Jobs CLI -----------------------------------------------------------


def test_12_show_running_lists_the_running_jobs(stack: Stack, story: Story) -> None:
    # Two real running jobs, held still while the operator looks: the S3 server is paused
    # (SIGSTOP), so each job waits in fetch_video for its download while its worker, alive,
    # keeps heartbeating. One is the job Test 11 released; the other is enqueued here.
    released = story["released_job"]
    other = enqueue(stack, {"source_type": "s3", "s3_key": "videos/test-3.mp4"})
    jobs = {released, other}
    stack.s3.signal(signal.SIGSTOP)
    try:
        worker = stack.worker("--concurrency", "2", "--limit", "2", name="held-worker")
        wait_for(
            lambda: (
                stack.query(
                    f"SELECT count(*) FROM ingestion_jobs WHERE id IN ('{released}', '{other}') "
                    "AND status = 'RUNNING' AND stage = 'fetch_video'"
                )
                == [{"count": "2"}]
            ),
            timeout=60,
            what=lambda: f"both jobs waiting in fetch_video; worker output:\n{worker.output}",
        )
        command = run_worker(stack, "--show-running", name="show-running")
        held = {
            row["id"]: row
            for row in stack.query(
                "SELECT id, stage, progress FROM ingestion_jobs WHERE status = 'RUNNING'"
            )
        }
    finally:
        stack.s3.signal(signal.SIGCONT)

    assert set(held) == jobs, held
    assert command.lines[0] == "Running jobs: 2", command.output
    assert len(command.lines) == 3, command.output
    shown = {}
    for line in command.lines[1:]:
        match = re.fullmatch(
            r"  (\w{8})\.\.\.: stage=(\w+) progress=(\d+)% running=(\d+)s heartbeat_age=(\d+)s",
            line,
        )
        assert match, command.output
        shown[match[1]] = match
    assert set(shown) == {job_id[:8] for job_id in jobs}, command.output
    for job_id in jobs:
        match = shown[job_id[:8]]
        assert match[2] == held[job_id]["stage"] == "fetch_video", (held, command.output)
        assert int(match[3]) == round(float(held[job_id]["progress"]) * 100), command.output
        # A live worker beats every second: the heartbeat is fresh however long the job runs.
        assert int(match[5]) <= 5 and int(match[5]) <= int(match[4]) < 60, command.output

    # With the S3 server back, both downloads finish and so do the jobs.
    code = worker.wait(WORKER_TIMEOUT)
    assert code == 0, worker.output
    lines_in_order(worker, [r"Jobs processed: 2", r"Jobs succeeded: 2", r"Jobs failed: 0"])
    assert {get_job(stack, job_id)["status"] for job_id in jobs} == {"SUCCEEDED"}


# -- Test 13: Concurrency Control ---------------------------------------------------------------


def test_13_a_worker_never_runs_more_jobs_than_its_concurrency(stack: Stack) -> None:
    # Step 13.1.
    worker = stack.worker("--concurrency", "2", "--limit", "5", name="concurrency-2")
    worker.wait_for_line(r"Worker ready - starting poll loop", 60)
    # Step 13.3's query, sampled every 0.1 s for the whole run (started before the jobs).
    watch = stack.watch(
        """
SELECT COUNT(*) as running_count
FROM ingestion_jobs
WHERE status = 'RUNNING';
""",
        0.1,
        name="watch-running",
    )
    watch.wait_for_line(r"^running_count$", 30)

    # Step 13.2.
    output = stack.shell(
        """
for i in {1..5}; do
  curl -X POST http://localhost:3000/api/ingest/enqueue \\
    -H "Content-Type: application/json" \\
    -H "X-Admin-Key: $ADMIN_API_KEY" \\
    -d "{\\"source_type\\": \\"s3\\", \\"s3_key\\": \\"videos/concurrent-$i.mp4\\"}"
done
"""
    )
    jobs = [job["job_id"] for job in json_documents(output)]
    assert len(set(jobs)) == 5, output

    code = worker.wait(WORKER_TIMEOUT * 2)
    watch.stop()
    assert code == 0, worker.output
    lines_in_order(worker, [r"Jobs processed: 5", r"Jobs succeeded: 5", r"Jobs failed: 0"])

    # Expected: never more than 2 running at once (and 2 did run together: the limit is real).
    counts = [int(row["running_count"]) for sample in watched_samples(watch) for row in sample]
    assert counts and max(counts) == 2, counts
    ids = ", ".join(f"'{job_id}'" for job_id in jobs)
    assert stack.query(
        f"SELECT status, attempts, count(*) FROM ingestion_jobs WHERE id IN ({ids}) "
        "GROUP BY status, attempts"
    ) == [{"status": "SUCCEEDED", "attempts": "1", "count": "5"}]


# -- Production Monitoring SQL -------------------------------------------------------------------


def test_production_monitoring_sql(stack: Stack, story: Story) -> None:
    # Run last, where the finished jobs of Tests 10-13 give the views something to show (the
    # checklist lists these queries right after its Cleanup, on whatever the table holds). Two
    # more jobs are arranged first: a dead letter (one attempt allowed, missing object) and a
    # job stuck without heartbeat (Test 11's UPDATE).
    dead = enqueue(
        stack, {"source_type": "s3", "s3_key": "nonexistent/dead-letter.mp4", "max_attempts": 1}
    )
    run_worker(stack, "--once", "--limit", "1", name="dead-letter")
    stuck = enqueue(stack, {"source_type": "s3", "s3_key": "videos/test-2.mp4"})
    stack.psql(
        f"""
UPDATE ingestion_jobs
SET status = 'RUNNING', locked_at = NOW() - INTERVAL '10 minutes', locked_by = 'crashed-worker',
    last_heartbeat_at = NOW() - INTERVAL '10 minutes', stage = 'llm_analysis', progress = 0.45
WHERE id = '{stuck}';
"""
    )

    def columns_and_rows(sql: str) -> tuple[list[str], list[dict[str, str]]]:
        output = stack.psql(sql, "--csv")
        return psql_columns(output), psql_rows(output)

    # Currently running jobs, with stage and progress.
    columns, rows = columns_and_rows("SELECT * FROM running_jobs_monitor;")
    assert columns[:5] == ["id", "stage", "progress", "running_seconds", "heartbeat_age_seconds"]
    assert [(row["id"], row["stage"], row["progress"]) for row in rows] == [
        (stuck, "llm_analysis", "0.45")
    ], rows
    assert 600 <= int(rows[0]["heartbeat_age_seconds"]) < 660, rows
    assert 600 <= int(rows[0]["running_seconds"]) < 660, rows

    # Job timing statistics: one row per finished status, counting the timed jobs.
    columns, rows = columns_and_rows("SELECT * FROM job_timing_stats;")
    assert columns == ["status", "count", "avg_duration_seconds", "p50_seconds", "p95_seconds"]
    timed = {
        row["status"]: row["count"]
        for row in stack.query(
            "SELECT status, count(*) FROM ingestion_jobs WHERE status IN ('SUCCEEDED', 'FAILED') "
            "AND processing_completed_at IS NOT NULL GROUP BY status"
        )
    }
    assert {row["status"]: row["count"] for row in rows} == timed, rows
    # Test 10's, Test 12's two and Test 13's five; the dead letter.
    assert timed == {"SUCCEEDED": "8", "FAILED": "1"}, timed
    succeeded = next(row for row in rows if row["status"] == "SUCCEEDED")
    assert 0 < float(succeeded["p50_seconds"]) <= float(succeeded["p95_seconds"]), rows

    # Stage distribution: every job counted once, by status and stage.
    columns, rows = columns_and_rows("SELECT * FROM stage_distribution;")
    assert columns[:3] == ["status", "stage", "count"], columns
    total = stack.query("SELECT count(*) FROM ingestion_jobs")[0]["count"]
    assert sum(int(row["count"]) for row in rows) == int(total), rows
    assert {"status": "RUNNING", "stage": "llm_analysis", "count": "1"}.items() <= next(
        row for row in rows if row["status"] == "RUNNING"
    ).items(), rows

    # Jobs stuck without heartbeat: exactly the stuck one.
    columns, rows = columns_and_rows(
        """
SELECT id, stage, last_heartbeat_at,
       EXTRACT(EPOCH FROM (NOW() - last_heartbeat_at))::int as heartbeat_age_seconds
FROM ingestion_jobs
WHERE status = 'RUNNING'
  AND last_heartbeat_at < NOW() - INTERVAL '5 minutes'
ORDER BY last_heartbeat_at ASC;
"""
    )
    assert columns == ["id", "stage", "last_heartbeat_at", "heartbeat_age_seconds"]
    assert [row["id"] for row in rows] == [stuck], rows
    assert int(rows[0]["heartbeat_age_seconds"]) >= 600, rows

    # Dead letter jobs: the job that used its one attempt.
    columns, rows = columns_and_rows("SELECT * FROM dead_letter_jobs LIMIT 10;")
    assert {"id", "attempts", "max_attempts", "error_code", "last_error"} <= set(columns)
    assert [(row["id"], row["attempts"], row["error_code"]) for row in rows] == [
        (dead, "1", "S3_OBJECT_NOT_FOUND")
    ], rows

    # A specific job's full history: Test 10's job, start to finish.
    job_id = story["heartbeat_job"]
    columns, rows = columns_and_rows(
        substitute(
            """
SELECT
    id,
    status,
    stage,
    progress,
    attempts,
    max_attempts,
    created_at,
    processing_started_at,
    processing_completed_at,
    EXTRACT(EPOCH FROM (processing_completed_at - processing_started_at))::int as duration_seconds,
    last_error,
    error_code,
    input,
    output
FROM ingestion_jobs
WHERE id = 'JOB_ID_HERE';
""",
            job_id,
        )
    )
    assert columns == [
        "id", "status", "stage", "progress", "attempts", "max_attempts", "created_at",
        "processing_started_at", "processing_completed_at", "duration_seconds", "last_error",
        "error_code", "input", "output",
    ]  # fmt: skip
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["status"], row["stage"], row["progress"], row["attempts"]) == (
        "SUCCEEDED",
        "succeeded",
        "1",
        "1",
    ), row
    assert int(row["duration_seconds"]) >= 0 and row["last_error"] == "", row
    assert json.loads(row["input"]) == {"source_type": "s3", "s3_key": "videos/test-ad.mp4"}
    assert uuid.UUID(json.loads(row["output"])["ad_id"])
