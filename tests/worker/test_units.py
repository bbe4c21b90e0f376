"""The worker's pure logic: configuration, output lines, what is sent and said after a run.
No I/O. (Input validation belongs to the pipeline: tests/pipeline/test_sources.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import duration_pb2

from jobqueue.settings import ConfigError
from jobqueue.v1 import job_pb2
from worker_service import output
from worker_service.cli import build_parser, configure
from worker_service.config import ENV_MIRRORS, resolve
from worker_service.settle import job_output, json_safe, next_step


def test_defaults() -> None:
    _, config = configure([], {})
    assert (config.queue_addr, config.concurrency, config.limit, config.once) == (
        "127.0.0.1:50051",
        1,
        0,
        False,
    )
    assert config.poll_interval_seconds == 5.0
    assert config.heartbeat_interval_seconds == 5.0
    # The queue service's default HEARTBEAT_TIMEOUT_SECONDS, read from the same variable.
    assert config.heartbeat_timeout_seconds == 120.0
    assert config.pipeline == "worker_service.pipeline.factory:build_pipeline"
    assert config.auth_token is None
    hostname, pid, random = config.worker_id.rsplit("-", 2)
    assert hostname and pid.isdigit() and len(random) == 6


def test_flags_win_over_their_environment_mirrors() -> None:
    env = {"WORKER_CONCURRENCY": "3", "WORKER_LIMIT": "7", "QUEUE_ADDR": "queue:50051"}
    _, from_env = configure([], env)
    assert (from_env.concurrency, from_env.limit, from_env.queue_addr) == (3, 7, "queue:50051")
    _, flagged = configure(["--concurrency", "5", "--once", "--poll-interval", "0.5"], env)
    assert (flagged.concurrency, flagged.limit, flagged.once) == (5, 7, True)
    assert flagged.poll_interval_seconds == 0.5


def test_every_environment_mirror_is_in_the_help() -> None:
    help_text = " ".join(build_parser().format_help().split())
    for _dest, variable, flag in ENV_MIRRORS:
        assert flag in help_text
        assert f"env {variable}" in help_text
    assert "QUEUE_AUTH_TOKEN" in help_text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_CONCURRENCY": "0"}, "--concurrency (WORKER_CONCURRENCY) must be at least 1"),
        ({"WORKER_CONCURRENCY": "2.5"}, "must be a whole number"),
        ({"WORKER_LIMIT": "-1"}, "--limit (WORKER_LIMIT) must be at least 0"),
        ({"WORKER_POLL_INTERVAL": "61"}, "at most 60"),
        (
            {"WORKER_POLL_INTERVAL": "nan"},
            "--poll-interval (WORKER_POLL_INTERVAL) must be a finite",
        ),
        ({"WORKER_SHUTDOWN_GRACE_SECONDS": "inf"}, "must be a finite number, got 'inf'"),
        ({"WORKER_RPC_TIMEOUT_SECONDS": "0.05"}, "--rpc-timeout (WORKER_RPC_TIMEOUT_SECONDS) must"),
        ({"HEARTBEAT_INTERVAL_SECONDS": "120"}, "HEARTBEAT_INTERVAL_SECONDS) must be at most 60"),
        (
            {"HEARTBEAT_INTERVAL_SECONDS": "30", "HEARTBEAT_TIMEOUT_SECONDS": "60"},
            "--heartbeat-timeout (HEARTBEAT_TIMEOUT_SECONDS) must be more than twice",
        ),
        ({"QUEUE_ADDR": "http://queue"}, "--queue-addr (QUEUE_ADDR) must be HOST:PORT"),
        ({"WORKER_ID": "has space"}, "without spaces"),
        ({"WORKER_PIPELINE": "no-colon"}, "must be module:callable"),
        ({"WORKER_ONCE": "maybe"}, "must be true or false"),
    ],
)
def test_bad_values_are_refused_with_the_names_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve({}, env)
    assert message in str(caught.value)


def test_source_labels() -> None:
    assert output.source_label({"source_type": "s3", "s3_key": "videos/a.mp4"}) == "s3:videos/a.mp4"
    assert output.source_label({"source_type": "local", "path": "/v/a.mp4"}) == "local:/v/a.mp4"
    assert output.source_label({}) == "unknown:?"


def test_job_lines() -> None:
    job_id = "0123abcd-0000-4000-8000-000000000000"
    assert (
        output.processing(job_id, 1, 5, "s3:videos/test-ad.mp4")
        == "Processing job 0123abcd... (attempt 1/5): s3:videos/test-ad.mp4"
    )
    assert output.succeeded(job_id, 45.21, "yyyy") == "Job 0123abcd succeeded in 45.2s: ad_id=yyyy"
    assert (
        output.failed(job_id, 1.04, "S3_NOT_FOUND", "no object\ntrace", "will retry in 10.0s")
        == "Job 0123abcd failed in 1.0s: S3_NOT_FOUND: no object (will retry in 10.0s)"
    )
    assert output.counters(3, 2, 1) == ["Jobs processed: 3", "Jobs succeeded: 2", "Jobs failed: 1"]
    assert output.released(1) == "Released 1 stale jobs"


def test_running_jobs_lines_match_the_checklist() -> None:
    def running(job_id: str, stage: str, progress: float, run: float, age: float) -> object:
        return job_pb2.RunningJob(
            job=job_pb2.Job(id=job_id, stage=stage, progress=progress),
            running=duration_pb2.Duration(seconds=int(run), nanos=int((run % 1) * 1e9)),
            heartbeat_age=duration_pb2.Duration(seconds=int(age), nanos=int((age % 1) * 1e9)),
        )

    lines = output.running_jobs(
        [
            running("abc12345-aaaa", "llm_analysis", 0.6, 120.2, 5.4),  # type: ignore[list-item]
            running("def45678-bbbb", "transcription", 0.3, 60.0, 2.0),  # type: ignore[list-item]
        ]
    )
    assert lines == [
        "Running jobs: 2",
        "  abc12345...: stage=llm_analysis progress=60% running=120s heartbeat_age=5s",
        "  def45678...: stage=transcription progress=30% running=60s heartbeat_age=2s",
    ]
    assert output.running_jobs([]) == ["Running jobs: 0"]


def test_what_happens_after_a_failure() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    retry = job_pb2.Job(status=job_pb2.JOB_STATUS_RETRY, attempts=1, max_attempts=5)
    retry.updated_at.FromDatetime(now)
    retry.run_after.FromDatetime(now + timedelta(seconds=10))
    assert next_step(retry) == "will retry in 10.0s"
    dead = job_pb2.Job(status=job_pb2.JOB_STATUS_FAILED, attempts=5, max_attempts=5)
    assert next_step(dead) == "will not retry: 5/5 attempts used"
    permanent = job_pb2.Job(status=job_pb2.JOB_STATUS_FAILED, attempts=1, max_attempts=5)
    assert next_step(permanent) == "will not retry: permanent error"


def test_output_becomes_plain_json() -> None:
    from pathlib import Path

    assert json_safe({"workdir": Path("/tmp/x"), "n": 1, "nested": {"a": [1, None]}}) == {
        "workdir": "/tmp/x",
        "n": 1,
        "nested": {"a": [1, None]},
    }
    # PostgreSQL's jsonb refuses NUL: it becomes U+FFFD rather than losing the finished work.
    assert json_safe({"transcript": "a\x00b"}) == {"transcript": "a\ufffdb"}
    assert job_output({"ad_id": "x"}, {"fetch": 0.5}) == {
        "ad_id": "x",
        "stage_timings": {"fetch": 0.5},
    }


def test_the_token_and_unflagged_settings_are_read_from_the_environment() -> None:
    config = resolve({}, {"QUEUE_AUTH_TOKEN": " keep spaces ", "WORKER_ONCE": "yes"})
    assert config.auth_token == " keep spaces "
    assert config.once is True
    with pytest.raises(ConfigError, match=r"^WORKER_QUEUE|--queue \(WORKER_QUEUE\)"):
        resolve({}, {"WORKER_QUEUE": "q" * 101})


def test_a_queue_name_follows_the_queue_services_rule() -> None:
    # The queue service refuses a Claim on any other name (jobqueue.limits): the worker says so
    # at start-up instead of failing every Claim.
    assert resolve({"queue": "media.ads:v2/eu-west_1"}, {}).queue == "media.ads:v2/eu-west_1"
    for name in ("media ads", "-media", "média"):
        with pytest.raises(ConfigError, match=r"--queue \(WORKER_QUEUE\) must be letters"):
            resolve({"queue": name}, {})
