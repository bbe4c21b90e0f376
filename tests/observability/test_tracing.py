"""One advert's whole life is one trace: the gateway's REST request, its AdminService call, the
job (its trace context stored in the row), the worker's claim, one span per stage, the advert
stored, and the Complete.

All three components run in this process (the gateway's app behind httpx, the queue service on
a loopback port, a worker with the tests' small real pipeline), so that one SDK provider with
an in-memory exporter sees every span they make.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.config import Config as GatewayConfig
from jobqueue import tracing
from tests.support.grpc_server import RunningQueue, running_queue, service_config
from tests.worker.pipelines import STAGE_NAMES, build_pipeline
from worker_service.client import QueueClient
from worker_service.config import WorkerConfig
from worker_service.runner import Worker

pytestmark = pytest.mark.integration

ADMIN_KEY = "trace-admin-key-0123456789"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for this test only (before any server or channel is built)."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use(provider)
    try:
        yield spans
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest.fixture
async def traced_queue(
    exporter: InMemorySpanExporter, database_url: str
) -> AsyncIterator[RunningQueue]:
    async with running_queue(service_config(database_url)) as running:
        yield running


def _by_trace(spans: tuple[ReadableSpan, ...], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def _scope(span: ReadableSpan) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""


async def test_one_trace_holds_the_gateway_the_queue_service_and_the_worker(
    exporter: InMemorySpanExporter,
    traced_queue: RunningQueue,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "traced.mp4").write_bytes(b"not really a video" * 1000)
    monkeypatch.setenv("TEST_OBJECT_ROOT", str(tmp_path))
    target = traced_queue.target

    # The REST request.
    app = create_app(GatewayConfig(admin_api_key=ADMIN_KEY, queue_addr=target))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as http,
    ):
        answer = await http.post(
            "/api/ingest/enqueue",
            json={"source_type": "s3", "s3_key": "videos/traced.mp4"},
            headers={"X-Admin-Key": ADMIN_KEY},
        )
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["job_id"]
        shown = await http.get(f"/api/ingest/jobs/{job_id}", headers={"X-Admin-Key": ADMIN_KEY})

    # The job carries the trace of that request.
    with psycopg.connect(database_url) as db:
        row = db.execute(
            "SELECT trace_context FROM ingestion_jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None and row[0], "the job stored no trace context"
    stored_trace_id = int(row[0].split("-")[1], 16)
    # The REST view of the job names it, so an operator can find the trace.
    assert shown.json()["job"]["trace_context"] == row[0]

    # A worker claims it, runs its stages (persist stores the advert) and completes it.
    config = WorkerConfig(queue_addr=target, worker_id="traced-worker", once=True)
    client = QueueClient(config)
    lines: list[str] = []
    pipeline = build_pipeline(queue_addr=target)
    try:
        await Worker(config, client, pipeline, lines.append).run()
    finally:
        pipeline.close()
        await client.close()
    assert any(line.startswith(f"Job {job_id[:8]} succeeded") for line in lines), lines

    spans = exporter.get_finished_spans()
    trace = _by_trace(spans, stored_trace_id)
    names = {(_scope(span), span.name) for span in trace}
    gateway_request = [s for s in trace if _scope(s) == "gateway"]
    assert [s.name for s in gateway_request] == ["POST /api/ingest/enqueue"], names
    expected = {
        ("queue_service", "jobqueue.v1.AdminService/EnqueueJob"),
        ("queue_service", "claim"),
        ("worker_service", "job"),
        ("worker_service", "claimed"),
        *(("worker_service", stage) for stage in ["validating_input", *STAGE_NAMES]),
        ("queue_service", "jobqueue.v1.AdvertService/StoreAdvert"),
        ("worker_service", "settle"),
        ("queue_service", "complete"),
    }
    assert expected <= names, sorted(expected - names)

    # The shape: the request is the root; the job hangs from its enqueue; stages from the job.
    by_id: dict[int, ReadableSpan] = {s.context.span_id: s for s in trace if s.context}

    def parent_of(span: ReadableSpan) -> ReadableSpan | None:
        return by_id.get(span.parent.span_id) if span.parent else None

    (root,) = [s for s in trace if s.parent is None]
    assert root is gateway_request[0]
    (job,) = [s for s in trace if s.name == "job"]
    enqueue = parent_of(job)
    assert enqueue is not None and enqueue.name == "jobqueue.v1.AdminService/EnqueueJob"
    assert job.attributes is not None and job.attributes["jobqueue.job_id"] == job_id
    for stage in STAGE_NAMES:
        (span,) = [s for s in trace if s.name == stage]
        assert parent_of(span) is job, stage
    # The advert sink's call from the persist stage's thread: its client span, then the server's.
    (store,) = [
        s
        for s in trace
        if s.name == "jobqueue.v1.AdvertService/StoreAdvert" and _scope(s) == "queue_service"
    ]
    ancestors: list[Any] = []
    at = parent_of(store)
    while at is not None:
        ancestors.append(at.name)
        at = parent_of(at)
    assert ancestors[:3] == ["jobqueue.v1.AdvertService/StoreAdvert", "persist", "job"], ancestors
    stage_starts = [next(s for s in trace if s.name == n).start_time for n in STAGE_NAMES]
    assert stage_starts == sorted(stage_starts)
