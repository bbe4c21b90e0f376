"""AdvertStore and AdvertServicer on a real PostgreSQL (migrations 003-005 applied with plain
SQL), served by a real grpc.aio server on a loopback port and called through a real channel;
and the worker's GrpcAdvertSink against the same server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import psycopg_pool
import pytest
from google.protobuf import json_format

from jobqueue.rpc import error_reason
from jobqueue.v1 import advert_service_pb2, advert_service_pb2_grpc
from queue_service.advert_store import AdvertStore
from queue_service.adverts import AdvertServicer
from tests.pipeline.conftest import make_context
from tests.pipeline.sample_media import SampleAdvert
from tests.support.processes import free_port
from worker_service.pipeline.errors import JobStopped, TransientError
from worker_service.pipeline.factory import build_pipeline
from worker_service.providers.grpc_sink import GrpcAdvertSink

pytestmark = pytest.mark.integration

# A well-formed job id, so that a request is refused for what the test is about.
SOME_JOB = "00000000-0000-4000-8000-000000000000"


@dataclass
class Service:
    stub: advert_service_pb2_grpc.AdvertServiceStub
    target: str
    url: str


@pytest.fixture
async def service(advert_database: str) -> AsyncIterator[Service]:
    pool = psycopg_pool.AsyncConnectionPool(advert_database, min_size=1, max_size=4, open=False)
    await pool.open()
    server = grpc.aio.server()
    advert_service_pb2_grpc.add_AdvertServiceServicer_to_server(
        AdvertServicer(AdvertStore(pool)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(target)
    try:
        yield Service(advert_service_pb2_grpc.AdvertServiceStub(channel), target, advert_database)
    finally:
        await channel.close(grace=None)
        await server.stop(grace=None)
        await pool.close()


def running_job(url: str, key: str) -> tuple[str, int]:
    """A RUNNING job made by the state machine's own functions; returns (id, lease)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT * FROM enqueue_job(%s::jsonb, 'pipeline-test')",
            (json.dumps({"source_type": "s3", "s3_key": key}),),
        )
        row = conn.execute(
            "SELECT id, lease FROM claim_jobs('test-worker', 1, 'pipeline-test')"
        ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def advert(
    source_key: str, transcript: str = "Buy Sparkle Cola today."
) -> advert_service_pb2.Advert:
    message = advert_service_pb2.Advert(source_key=source_key, transcript=transcript)
    message.media.update({"duration_seconds": 8.0, "width": 320, "height": 240})
    message.analysis.update({"brand": "Sparkle Cola", "claims": ["crisp"]})
    message.provenance.update({"providers": {"embeddings": "test"}, "skipped": {}})
    message.keyframes.add(timestamp_seconds=0.0, uri="s3://b/k/0001.jpg", width=320, height=240)
    message.keyframes.add(timestamp_seconds=2.0, uri="s3://b/k/0002.jpg", width=320, height=240)
    message.chunks.add(
        index=0, kind="transcript", text=transcript, embedding=[0.25, -0.5, 0.125],
        embedding_model="m",
    )  # fmt: skip
    message.chunks.add(index=1, kind="media", text="8 seconds")  # no vector
    return message


async def test_store_is_idempotent_by_source_key(service: Service) -> None:
    job_id, lease = await asyncio.to_thread(running_job, service.url, "videos/a.mp4")
    first = await service.stub.StoreAdvert(
        advert_service_pb2.StoreAdvertRequest(
            advert=advert("s3:videos/a.mp4"), job_id=job_id, lease=lease
        )
    )
    assert first.created is True
    again = await service.stub.StoreAdvert(
        advert_service_pb2.StoreAdvertRequest(
            advert=advert("s3:videos/a.mp4", "New words."), job_id=job_id, lease=lease
        )
    )
    assert (again.ad_id, again.created) == (first.ad_id, False)

    stored = await service.stub.GetAdvert(advert_service_pb2.GetAdvertRequest(ad_id=first.ad_id))
    assert stored.id == first.ad_id
    assert stored.transcript == "New words."
    assert stored.media["width"] == 320
    assert stored.analysis["claims"] == ["crisp"]
    assert [k.timestamp_seconds for k in stored.keyframes] == [0.0, 2.0]
    assert [c.text for c in stored.chunks] == ["New words.", "8 seconds"]
    assert list(stored.chunks[0].embedding) == [0.25, -0.5, 0.125]
    assert stored.chunks[0].embedding_model == "m"
    assert list(stored.chunks[1].embedding) == [] and stored.chunks[1].embedding_model == ""
    assert stored.updated_at.ToDatetime() >= stored.created_at.ToDatetime()
    with psycopg.connect(service.url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM advert_chunks WHERE advert_id = %s", (first.ad_id,)
        ).fetchone()
        null_vectors = conn.execute(
            "SELECT count(*) FROM advert_chunks WHERE advert_id = %s AND embedding IS NULL",
            (first.ad_id,),
        ).fetchone()
    assert count == (2,), "re-storing replaced the chunks instead of adding to them"
    assert null_vectors == (1,)


async def test_store_checks_the_lease(service: Service) -> None:
    job_id, lease = await asyncio.to_thread(running_job, service.url, "videos/lease.mp4")
    ok = await service.stub.StoreAdvert(
        advert_service_pb2.StoreAdvertRequest(
            advert=advert("s3:videos/lease.mp4"), job_id=job_id, lease=lease
        )
    )
    stored = await service.stub.GetAdvert(advert_service_pb2.GetAdvertRequest(ad_id=ok.ad_id))
    assert stored.job_id == job_id

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.StoreAdvert(
            advert_service_pb2.StoreAdvertRequest(
                advert=advert("s3:videos/lease.mp4", "zombie"), job_id=job_id, lease=lease + 1
            )
        )
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert error_reason(raised.value) == "LEASE_LOST"
    after = await service.stub.GetAdvert(advert_service_pb2.GetAdvertRequest(ad_id=ok.ad_id))
    assert after.transcript != "zombie", "a lost lease changes nothing"


async def test_store_for_an_unknown_job_is_lease_lost(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.StoreAdvert(
            advert_service_pb2.StoreAdvertRequest(
                advert=advert("s3:videos/gone.mp4"),
                job_id="00000000-0000-4000-8000-000000000000",
                lease=1,
            )
        )
    assert raised.value.code() == grpc.StatusCode.ABORTED


def fetch_one(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchone()


async def test_a_lease_less_store_cannot_wipe_a_running_jobs_advert(service: Service) -> None:
    """The issue's reproduction: StoreAdvert with an empty job_id overwrote the advert of a job
    that was still RUNNING, wiping its chunks. Now it is refused, and so is another job's."""
    job_id, lease = await asyncio.to_thread(running_job, service.url, "videos/held.mp4")
    mine = advert("s3:videos/held.mp4")
    for index in range(2, 40):
        mine.chunks.add(index=index, kind="transcript", text=f"line {index}")
    stored = await service.stub.StoreAdvert(
        advert_service_pb2.StoreAdvertRequest(advert=mine, job_id=job_id, lease=lease)
    )
    intruder = advert("s3:videos/held.mp4", "overwritten")
    intruder.job_id = "00000000-0000-4000-8000-0000000000ff"
    with pytest.raises(grpc.aio.AioRpcError) as lease_less:
        await service.stub.StoreAdvert(advert_service_pb2.StoreAdvertRequest(advert=intruder))
    assert lease_less.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # A second job of the same source, validly RUNNING under its own lease, may not take the
    # advert while the first still runs.
    other_id, other_lease = await asyncio.to_thread(
        running_job, service.url, "videos/held-again.mp4"
    )
    with pytest.raises(grpc.aio.AioRpcError) as held:
        await service.stub.StoreAdvert(
            advert_service_pb2.StoreAdvertRequest(
                advert=advert("s3:videos/held.mp4", "overwritten"),
                job_id=other_id,
                lease=other_lease,
            )
        )
    assert held.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(held.value) == "ADVERT_HELD"

    after = await service.stub.GetAdvert(advert_service_pb2.GetAdvertRequest(ad_id=stored.ad_id))
    assert (after.job_id, after.transcript, len(after.chunks)) == (job_id, mine.transcript, 40)
    row = await asyncio.to_thread(
        fetch_one, service.url, "SELECT job_id, lease FROM adverts WHERE id = %s", stored.ad_id
    )
    assert (str(row[0]), row[1]) == (job_id, lease)

    # Once the first job no longer runs, the other job's store replaces the advert.
    await asyncio.to_thread(
        fetch_one,
        service.url,
        "SELECT * FROM complete_job(%s, %s, '{}'::jsonb)",
        job_id,
        lease,
    )
    replaced = await service.stub.StoreAdvert(
        advert_service_pb2.StoreAdvertRequest(
            advert=advert("s3:videos/held.mp4", "second"), job_id=other_id, lease=other_lease
        )
    )
    assert (replaced.ad_id, replaced.created) == (stored.ad_id, False)


async def test_a_later_lease_of_the_same_job_replaces_its_advert(service: Service) -> None:
    job_id, lease = await asyncio.to_thread(running_job, service.url, "videos/relet.mp4")
    first = await service.stub.StoreAdvert(
        advert_service_pb2.StoreAdvertRequest(
            advert=advert("s3:videos/relet.mp4", "first"), job_id=job_id, lease=lease
        )
    )

    def release_and_reclaim() -> int:
        with psycopg.connect(service.url, autocommit=True) as conn:
            conn.execute(
                "UPDATE ingestion_jobs SET status = 'QUEUED', locked_at = NULL, locked_by = NULL"
                " WHERE id = %s",
                (job_id,),
            )
            row = conn.execute(
                "SELECT lease FROM claim_jobs('test-worker-2', 1, 'pipeline-test')"
            ).fetchone()
        assert row is not None
        return int(row[0])

    later = await asyncio.to_thread(release_and_reclaim)
    assert later > lease
    again = await service.stub.StoreAdvert(
        advert_service_pb2.StoreAdvertRequest(
            advert=advert("s3:videos/relet.mp4", "second"), job_id=job_id, lease=later
        )
    )
    assert again.ad_id == first.ad_id
    stored = await service.stub.GetAdvert(advert_service_pb2.GetAdvertRequest(ad_id=first.ad_id))
    assert stored.transcript == "second"


async def test_unknown_advert_is_not_found(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.GetAdvert(
            advert_service_pb2.GetAdvertRequest(ad_id="00000000-0000-4000-8000-000000000000")
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "request_",
    [
        advert_service_pb2.StoreAdvertRequest(),
        advert_service_pb2.StoreAdvertRequest(advert=advert_service_pb2.Advert()),
        advert_service_pb2.StoreAdvertRequest(advert=advert("s3:x"), job_id="not-a-uuid", lease=1),
        advert_service_pb2.StoreAdvertRequest(advert=advert("s3:x"), lease=3),
        advert_service_pb2.StoreAdvertRequest(advert=advert("s3:x")),
        advert_service_pb2.StoreAdvertRequest(
            advert=advert("s3:x"), job_id="00000000-0000-4000-8000-000000000000"
        ),
        advert_service_pb2.StoreAdvertRequest(
            advert=advert_service_pb2.Advert(
                source_key="s3:x", job_id="00000000-0000-4000-8000-00000000000b"
            ),
            job_id="00000000-0000-4000-8000-00000000000a",
            lease=1,
        ),
        advert_service_pb2.StoreAdvertRequest(
            advert=advert_service_pb2.Advert(
                source_key="s3:x",
                chunks=[advert_service_pb2.Chunk(index=0, text="t", embedding=[1.0])],
            ),
            job_id=SOME_JOB,
            lease=1,
        ),
        advert_service_pb2.StoreAdvertRequest(
            advert=advert_service_pb2.Advert(
                source_key="s3:x",
                chunks=[
                    advert_service_pb2.Chunk(
                        index=0, text="t", embedding=[float("nan")], embedding_model="m"
                    )
                ],
            ),
            job_id=SOME_JOB,
            lease=1,
        ),
    ],
    ids=[
        "no-advert",
        "no-source-key",
        "bad-job-id",
        "lease-without-job",
        "no-job-no-lease",
        "job-without-lease",
        "another-job-inside",
        "vector-no-model",
        "nan",
    ],
)
async def test_malformed_requests_are_invalid_argument(service: Service, request_: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.StoreAdvert(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_with_a_malformed_id_is_invalid_argument(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.GetAdvert(advert_service_pb2.GetAdvertRequest(ad_id="nope"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- the worker's side: GrpcAdvertSink -------------------------------------------------------


async def test_sink_stores_and_maps_a_lost_lease_to_job_stopped(service: Service) -> None:
    job_id, lease = await asyncio.to_thread(running_job, service.url, "videos/sink.mp4")
    with GrpcAdvertSink(service.target, token=None) as sink:
        ad_id, created = await asyncio.to_thread(
            sink.store, advert("s3:videos/sink.mp4"), job_id, lease
        )
        assert created is True
        with pytest.raises(JobStopped):
            await asyncio.to_thread(sink.store, advert("s3:videos/sink.mp4"), job_id, lease + 5)
    stored = await service.stub.GetAdvert(advert_service_pb2.GetAdvertRequest(ad_id=ad_id))
    assert stored.source_key == "s3:videos/sink.mp4"


def test_sink_without_a_server_is_transient() -> None:
    port = free_port()
    with (
        GrpcAdvertSink(f"127.0.0.1:{port}", token=None, deadline_seconds=2) as sink,
        pytest.raises(TransientError) as raised,
    ):
        sink.store(advert("s3:x"), SOME_JOB, 1)
    assert raised.value.code == "QUEUE_UNAVAILABLE"


class _Recorder(advert_service_pb2_grpc.AdvertServiceServicer):
    """A sync servicer answering with a chosen status, recording the metadata it got."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code
        self.metadata: list[dict[str, str]] = []

    def StoreAdvert(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        context.abort(self.code, "test")


@pytest.mark.parametrize(
    ("code", "expected", "error_code"),
    [
        (grpc.StatusCode.UNAVAILABLE, TransientError, "QUEUE_UNAVAILABLE"),
        (grpc.StatusCode.INVALID_ARGUMENT, "permanent", "ADVERT_INVALID"),
        (grpc.StatusCode.UNAUTHENTICATED, "permanent", "QUEUE_AUTH_FAILED"),
        (grpc.StatusCode.INTERNAL, TransientError, "ADVERT_STORE_FAILED"),
    ],
)
def test_sink_classifies_status_codes_and_sends_the_token(
    code: grpc.StatusCode, expected: Any, error_code: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from worker_service.pipeline.errors import PermanentError, StageError

    recorder = _Recorder(code)
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    advert_service_pb2_grpc.add_AdvertServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with (
            GrpcAdvertSink(f"127.0.0.1:{port}", token="s3cret") as sink,
            pytest.raises(StageError) as raised,
        ):
            sink.store(advert("s3:x"), SOME_JOB, 1)
    finally:
        server.stop(grace=None)
    kind = PermanentError if expected == "permanent" else expected
    assert isinstance(raised.value, kind)
    assert raised.value.code == error_code
    assert recorder.metadata[0]["authorization"] == "Bearer s3cret"


# -- end to end: the pipeline persisting into PostgreSQL through the service -----------------


async def test_pipeline_persists_through_the_service(
    service: Service, sample: SampleAdvert, no_openai: None, tmp_path: Path
) -> None:
    job_id, lease = await asyncio.to_thread(running_job, service.url, "local-e2e")
    # The factory opens the channel to AdvertService itself, as it does in the worker.
    pipeline = build_pipeline({"EMBEDDING_PROVIDER": "none"}, queue_addr=service.target)
    try:
        ctx, _ = make_context(
            tmp_path / "work", {"source_type": "local", "path": str(sample.path)}, lease
        )
        ctx.job_id = job_id

        def run() -> None:
            for stage in pipeline.stages:
                stage.run(ctx)

        await asyncio.to_thread(run)
    finally:
        pipeline.close()
    stored = await service.stub.GetAdvert(
        advert_service_pb2.GetAdvertRequest(ad_id=ctx.output["ad_id"])
    )
    assert stored.job_id == job_id
    assert stored.source_key == f"local:{sample.path.resolve()}"
    assert stored.media["width"] == sample.width
    assert len(stored.keyframes) == len(sample.scene_starts)
    assert [c.kind for c in stored.chunks] == ["media"]
    skipped = json_format.MessageToDict(stored.provenance)["skipped"]
    assert "OPENAI_API_KEY is not set" in skipped["transcription"]
