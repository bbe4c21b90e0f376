"""Each /metrics endpoint scraped during a run against the real processes, compared with the
database: `python -m queue_service` (QUEUE_METRICS_LISTEN), `python -m worker_service`
(WORKER_METRICS_LISTEN, LOG_FORMAT=json) and `python -m gateway` (/metrics).

The run: adverts enqueued through the REST API (some whose object is missing, with one attempt:
dead-lettered at once), a job held RUNNING in a stage (enqueued over gRPC, as a producer would)
and a job in a queue no worker serves. While the held job runs, every family is scraped and its
values checked against SELECT ... GROUP BY; then it is let go and the totals checked again.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from jobqueue.v1 import admin_service_pb2, admin_service_pb2_grpc
from tests.support.databases import create_database, drop_database, url_for
from tests.support.processes import (
    Process,
    gateway_process,
    queue_service_process,
    worker_process,
)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN_KEY = "metrics-admin-key-0123456789"
GOOD = [f"videos/good-{i}.mp4" for i in range(5)]
MISSING = ["videos/missing-1.mp4", "videos/missing-2.mp4"]
HELD = "videos/held.mp4"
STATUSES = ("QUEUED", "RUNNING", "SUCCEEDED", "RETRY", "FAILED", "CANCELLED")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[str, Samples]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent (a counter never incremented has no labelled child)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def helps(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# HELP (\S+) (.+)$", text, flags=re.MULTILINE))


@dataclass
class Run:
    db: psycopg.Connection[Any]
    queue: Process
    worker: Process
    gateway: Process
    gateway_url: str
    queue_metrics: str
    worker_metrics: str
    gate: Path

    def by_status(self) -> dict[tuple[str, str], int]:
        rows = self.db.execute(
            "SELECT queue, status, count(*) FROM ingestion_jobs GROUP BY queue, status"
        ).fetchall()
        return {(queue, status): int(n) for queue, status, n in rows}

    def count(self, where: str) -> int:
        row = self.db.execute(f"SELECT count(*) FROM ingestion_jobs WHERE {where}").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture(scope="module")
def run(template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    objects = tmp_path_factory.mktemp("objects")
    (objects / "videos").mkdir()
    for key in [*GOOD, HELD]:
        (objects / key).write_bytes(key.encode() * 5000)
    gate = tmp_path_factory.mktemp("gate") / "open"
    name = create_database(template=template_database, prefix="jq_metrics")
    database_url = url_for(name)
    try:
        with ExitStack() as stack:
            queue = stack.enter_context(
                queue_service_process(
                    database_url,
                    HEARTBEAT_TIMEOUT_SECONDS="60",
                    LOG_FORMAT="json",
                    LOG_LEVEL="INFO",
                )
            )
            queue_metrics = queue.wait_for_line(r"Metrics at (http://\S+)").group(1)
            queue_addr = f"127.0.0.1:{queue.port}"
            gateway, gateway_url = stack.enter_context(
                gateway_process(queue_addr, ADMIN_KEY, LOG_FORMAT="json", LOG_LEVEL="INFO")
            )
            worker = stack.enter_context(
                worker_process(
                    ["--concurrency", "2", "--poll-interval", "1"],
                    {
                        "QUEUE_ADDR": queue_addr,
                        "QUEUE_AUTH_TOKEN": "",
                        "WORKER_ID": "metrics-worker",
                        "WORKER_PIPELINE": "tests.worker.pipelines:build_pipeline",
                        "TEST_OBJECT_ROOT": str(objects),
                        "HEARTBEAT_INTERVAL_SECONDS": "0.2",
                        "WORKER_METRICS_LISTEN": "127.0.0.1:0",
                        "LOG_FORMAT": "json",
                        "LOG_LEVEL": "DEBUG",
                    },
                )
            )
            worker_metrics = worker.wait_for_line(r"Metrics at (http://\S+)").group(1)
            db = stack.enter_context(psycopg.connect(database_url, autocommit=True))
            yield Run(db, queue, worker, gateway, gateway_url, queue_metrics, worker_metrics, gate)
    finally:
        drop_database(name)


def enqueue_over_grpc(queue: Process, queue_name: str, job_input: dict[str, Any]) -> None:
    request = admin_service_pb2.EnqueueJobRequest(queue=queue_name)
    request.input.CopyFrom(struct_pb2.Struct())
    request.input.update(job_input)
    with grpc.insecure_channel(f"127.0.0.1:{queue.port}") as channel:
        admin_service_pb2_grpc.AdminServiceStub(channel).EnqueueJob(request, timeout=10)


def test_each_scrape_matches_the_database(run: Run) -> None:
    with httpx.Client(base_url=run.gateway_url, headers={"X-Admin-Key": ADMIN_KEY}) as http:
        for key in GOOD:
            answer = http.post("/api/ingest/enqueue", json={"source_type": "s3", "s3_key": key})
            assert answer.status_code == 201, answer.text
        for key in MISSING:
            answer = http.post(
                "/api/ingest/enqueue",
                json={"source_type": "s3", "s3_key": key, "max_attempts": 1},
            )
            assert answer.status_code == 201, answer.text
        # The same advert again: 200, an existing job (a duplicate, not a new one).
        again = http.post("/api/ingest/enqueue", json={"source_type": "s3", "s3_key": GOOD[0]})
        assert again.status_code == 200
        assert http.get("/api/ingest/jobs/not-a-uuid").status_code == 400
    enqueue_over_grpc(
        run.queue, "default", {"source_type": "s3", "s3_key": HELD, "gate": str(run.gate)}
    )
    enqueue_over_grpc(run.queue, "elsewhere", {"source_type": "s3", "s3_key": GOOD[1]})

    # The run as it stands: everything settled but the held job, RUNNING in its gate stage.
    wait_for(
        lambda: (
            run.count("status IN ('SUCCEEDED', 'FAILED')") == len(GOOD) + len(MISSING)
            and run.count("status = 'RUNNING' AND stage = 'wait_for_gate'") == 1
        ),
        what=lambda: f"the run to settle; worker output:\n{run.worker.output}",
    )

    # -- the queue service ----------------------------------------------------------------------
    # Jobs by queue and status: the gauge is read at most every few seconds, so wait for a
    # reading taken after the run settled, then compare every cell.
    def matching() -> tuple[str, Samples] | None:
        text, samples = scrape(run.queue_metrics)
        expected = run.by_status()
        shown = {
            (labels["queue"], labels["status"]): int(v)
            for (n, ls), v in samples.items()
            if n == "jobqueue_jobs" and (labels := dict(ls))
        }
        cells = {(q, s) for q, _ in expected for s in STATUSES}
        ok = all(shown.get(cell, -1) == expected.get(cell, 0) for cell in cells)
        return (text, samples) if ok else None

    text, queue_samples = wait_for(matching, timeout=20, what="jobqueue_jobs to match the table")
    assert value(queue_samples, "jobqueue_jobs", queue="elsewhere", status="QUEUED") == 1
    assert value(queue_samples, "jobqueue_jobs", queue="default", status="RUNNING") == 1

    default_rows = run.count("queue = 'default'")
    assert value(queue_samples, "jobqueue_jobs_enqueued_total", queue="default") == default_rows
    assert value(queue_samples, "jobqueue_jobs_enqueued_total", queue="elsewhere") == 1
    assert value(queue_samples, "jobqueue_jobs_enqueue_duplicates_total", queue="default") == 1
    attempts = run.db.execute(
        "SELECT sum(attempts) FROM ingestion_jobs WHERE queue = 'default'"
    ).fetchone()
    assert attempts is not None
    assert value(queue_samples, "jobqueue_jobs_claimed_total", queue="default") == attempts[0]
    assert value(queue_samples, "jobqueue_jobs_completed_total", queue="default") == run.count(
        "status = 'SUCCEEDED'"
    )
    assert value(
        queue_samples, "jobqueue_jobs_failed_total", queue="default", status="FAILED",
        reason="S3_NOT_FOUND",
    ) == run.count("status = 'FAILED' AND error_code = 'S3_NOT_FOUND'")  # fmt: skip
    assert total(queue_samples, "jobqueue_jobs_released_total") == 0
    # Latency histograms: one claim wait per claim, one enqueue -> start per first attempt.
    assert value(queue_samples, "jobqueue_claim_wait_seconds_count", queue="default") == attempts[0]
    assert value(
        queue_samples, "jobqueue_enqueue_to_start_seconds_count", queue="default"
    ) == run.count("queue = 'default' AND attempts >= 1")
    # The held job beats every 0.2 s: its heartbeat lag is small but known, and its worker's
    # stream is open.
    assert 0 <= value(queue_samples, "jobqueue_heartbeat_lag_seconds", queue="default") < 30
    assert value(queue_samples, "jobqueue_heartbeat_streams_active") == 1
    assert total(queue_samples, "jobqueue_heartbeats_total", action="continue") > 0
    # RPC latency by method and code, and the pool.
    rpc = "jobqueue_rpc_duration_seconds_count"
    assert value(queue_samples, rpc, method="jobqueue.v1.AdminService/EnqueueJob", code="OK") == (
        len(GOOD) + len(MISSING) + 1 + 2
    )
    assert value(queue_samples, rpc, method="jobqueue.v1.QueueService/Claim", code="OK") >= 1
    assert value(queue_samples, rpc, method="jobqueue.v1.AdminService/GetJob", code="OK") == 0
    for pool in ("hot", "admin", "adverts", "background"):
        assert value(queue_samples, "jobqueue_db_pool_max_connections", pool=pool) >= 1, pool
    assert value(queue_samples, "jobqueue_db_pool_connections", pool="hot", state="open") >= 1
    for family in (
        "jobqueue_jobs", "jobqueue_jobs_enqueued_total", "jobqueue_jobs_claimed_total",
        "jobqueue_jobs_completed_total", "jobqueue_jobs_failed_total",
        "jobqueue_jobs_released_total", "jobqueue_claim_wait_seconds",
        "jobqueue_enqueue_to_start_seconds", "jobqueue_heartbeat_lag_seconds",
        "jobqueue_heartbeat_streams_active", "jobqueue_db_pool_connections",
        "jobqueue_rpc_duration_seconds",
    ):  # fmt: skip
        assert helps(text).get(family), f"no HELP for {family}"

    # -- the worker -----------------------------------------------------------------------------
    # A job is counted when the answer to its Complete or Fail reaches the worker, a moment after
    # the commit the wait above saw: wait for a scrape that counts every settled job.
    jobs = "jobqueue_worker_jobs_total"

    def all_counted() -> tuple[str, Samples] | None:
        text, samples = scrape(run.worker_metrics)
        counted = (
            value(samples, jobs, queue="default", outcome="succeeded"),
            value(samples, jobs, queue="default", outcome="failed"),
        )
        return (text, samples) if counted == (len(GOOD), len(MISSING)) else None

    text, worker_samples = wait_for(all_counted, timeout=20, what="the worker to count every job")
    assert value(worker_samples, "jobqueue_worker_jobs_running") == 1
    stage_count = "jobqueue_worker_stage_duration_seconds_count"
    assert value(worker_samples, stage_count, stage="persist") == len(GOOD)
    assert value(worker_samples, stage_count, stage="read_source") == len(GOOD)
    assert value(
        worker_samples, "jobqueue_worker_job_duration_seconds_count", queue="default",
        outcome="succeeded",
    ) == len(GOOD)  # fmt: skip
    assert value(worker_samples, "jobqueue_worker_heartbeat_roundtrip_seconds_count") > 0
    for family in (
        jobs, "jobqueue_worker_job_duration_seconds", "jobqueue_worker_stage_duration_seconds",
        "jobqueue_worker_heartbeat_roundtrip_seconds", "jobqueue_worker_jobs_running",
    ):  # fmt: skip
        assert helps(text).get(family), f"no HELP for {family}"

    # -- the gateway ----------------------------------------------------------------------------
    answer = httpx.get(f"{run.gateway_url}/metrics")  # no key needed
    assert answer.status_code == 200
    assert ADMIN_KEY not in answer.text
    gateway_samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            gateway_samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    requests = "jobqueue_gateway_requests_total"
    route = "/api/ingest/enqueue"
    assert value(gateway_samples, requests, method="POST", route=route, status="201") == (
        len(GOOD) + len(MISSING)
    )
    assert value(gateway_samples, requests, method="POST", route=route, status="200") == 1
    assert (
        value(
            gateway_samples, requests, method="GET", route="/api/ingest/jobs/{job_id}", status="400"
        )
        == 1
    )
    assert value(
        gateway_samples, "jobqueue_gateway_request_duration_seconds_count", method="POST",
        route=route,
    ) == len(GOOD) + len(MISSING) + 1  # fmt: skip

    # -- the held job finishes: the totals follow ---------------------------------------------
    run.gate.touch()
    wait_for(lambda: run.count("status = 'SUCCEEDED'") == len(GOOD) + 1, what="the held job")

    def completed() -> Samples | None:
        _, samples = scrape(run.queue_metrics)
        done = value(samples, "jobqueue_jobs_completed_total", queue="default")
        return samples if done == run.count("status = 'SUCCEEDED'") else None

    wait_for(completed, timeout=10, what="the completed total to count the held job")
    _, worker_samples = scrape(run.worker_metrics)
    assert value(worker_samples, jobs, queue="default", outcome="succeeded") == len(GOOD) + 1
    assert value(worker_samples, "jobqueue_worker_jobs_running") == 0


def test_the_worker_logs_json_lines_with_the_job_fields(run: Run) -> None:
    """LOG_FORMAT=json: every log line of the worker is one JSON object; a job's lines carry
    its job_id, attempt and worker_id. (The worker's stdout lines are not logs and stay text.)"""
    failed = run.db.execute(
        "SELECT id::text, attempts FROM ingestion_jobs WHERE status = 'FAILED'"
    ).fetchall()
    assert failed, "test_each_scrape_matches_the_database runs first"
    logged = [json.loads(line) for line in run.worker.lines if line.startswith("{")]
    assert logged, run.worker.output
    for entry in logged:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
    texty = [
        line
        for line in run.worker.lines
        if re.match(r"\d{4}-\d\d-\d\d \S+ (DEBUG|INFO|WARNING|ERROR) ", line)
    ]
    assert not texty, texty
    for job_id, attempts in failed:
        lines = [entry for entry in logged if entry.get("job_id") == job_id]
        assert lines, f"no JSON log line for job {job_id}"
        assert all(entry["attempt"] == attempts for entry in lines)
        assert all(entry["worker_id"] == "metrics-worker" for entry in lines)
        assert any("S3_NOT_FOUND" in entry["message"] for entry in lines)


TEXT_LOG = re.compile(r"\d{4}-\d\d-\d\d \S+ (DEBUG|INFO|WARNING|ERROR) ")


@pytest.mark.parametrize("process", ["queue", "gateway"])
def test_the_queue_service_and_the_gateway_log_json_lines(run: Run, process: str) -> None:
    """LOG_FORMAT=json in the other two processes: their log lines (start-up, migrations,
    uvicorn's own) are JSON objects; their output lines (`... listening on`) stay as they are."""
    output: Process = getattr(run, process)
    logged = [json.loads(line) for line in output.lines if line.startswith("{")]
    assert logged, output.output
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in logged)
    assert not [line for line in output.lines if TEXT_LOG.match(line)], output.output
