"""The routes the dashboard added to the REST API: the running jobs, an advert, and the jobs
list's queue filter. Each answers what the queue service holds, refuses bad input with 400 and
an unknown advert with 404 (the key rules are test_requests.py's, for every route)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from jobqueue.v1 import advert_service_pb2, advert_service_pb2_grpc
from tests.gateway.conftest import Stack
from tests.support.jobs import insert_job

pytestmark = pytest.mark.integration


@pytest.fixture
def adverts(stack: Stack) -> Iterator[advert_service_pb2_grpc.AdvertServiceStub]:
    """AdvertService of the stack's queue service, as the pipeline's persist stage calls it."""
    assert stack.queue is not None
    with grpc.insecure_channel(f"127.0.0.1:{stack.queue.port}") as channel:
        yield advert_service_pb2_grpc.AdvertServiceStub(channel)


def test_running_lists_each_running_job_with_its_ages(stack: Stack) -> None:
    claimed = insert_job(
        stack.db,
        status="RUNNING",
        stage="transcription",
        progress=0.4,
        locked_by="worker-1",
        seconds_ago={"locked_at": 90, "processing_started_at": 90, "last_heartbeat_at": 3},
    )
    insert_job(stack.db, status="QUEUED")
    insert_job(stack.db, status="SUCCEEDED")

    answer = stack.http.get("/api/ingest/running")
    assert answer.status_code == 200
    [entry] = answer.json()["jobs"]
    assert entry["job"]["id"] == str(claimed["id"])
    assert entry["job"]["stage"] == "transcription" and entry["job"]["progress"] == 0.4
    assert entry["job"]["locked_by"] == "worker-1"
    assert 90 <= entry["running_seconds"] < 120
    assert 3 <= entry["heartbeat_age_seconds"] < 30


def test_running_filters_by_queue(stack: Stack) -> None:
    insert_job(stack.db, status="RUNNING", queue="default")
    other = insert_job(stack.db, status="RUNNING", queue="priority-ads")

    answer = stack.http.get("/api/ingest/running", params={"queue": "priority-ads"})
    assert [entry["job"]["id"] for entry in answer.json()["jobs"]] == [str(other["id"])]
    none = stack.http.get("/api/ingest/running", params={"queue": "none"}).json()
    assert none == {"jobs": [], "next_cursor": None}
    assert len(stack.http.get("/api/ingest/running").json()["jobs"]) == 2


def test_running_comes_a_page_at_a_time(stack: Stack) -> None:
    ids = [
        str(insert_job(stack.db, status="RUNNING", seconds_ago={"locked_at": 60 - i})["id"])
        for i in range(3)
    ]
    first = stack.http.get("/api/ingest/running", params={"limit": 2}).json()
    assert [entry["job"]["id"] for entry in first["jobs"]] == ids[:2]
    rest = stack.http.get(
        "/api/ingest/running", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [entry["job"]["id"] for entry in rest["jobs"]] == ids[2:]
    assert rest["next_cursor"] is None
    too_many = stack.http.get("/api/ingest/running", params={"limit": 1001})
    assert too_many.status_code == 400 and too_many.json()["error"]["field"] == "limit"


def test_jobs_list_filters_by_queue(stack: Stack) -> None:
    insert_job(stack.db, status="FAILED", queue="default")
    other = insert_job(stack.db, status="FAILED", queue="priority-ads")
    insert_job(stack.db, status="QUEUED", queue="priority-ads")

    page = stack.http.get("/api/ingest/jobs", params={"queue": "priority-ads", "status": "FAILED"})
    assert page.status_code == 200
    assert [job["id"] for job in page.json()["jobs"]] == [str(other["id"])]


@pytest.mark.parametrize("path", ["/api/ingest/running", "/api/ingest/jobs"])
@pytest.mark.parametrize("queue", ["", "a\x00b", "tab\there", " padded", "q" * 201])
def test_a_queue_filter_the_queue_could_not_hold_is_400(
    shared_stack: Stack, path: str, queue: str
) -> None:
    answer = shared_stack.http.get(path, params={"queue": queue})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_ARGUMENT", "queue")


def test_running_refuses_unknown_query_parameters(shared_stack: Stack) -> None:
    answer = shared_stack.http.get("/api/ingest/running?status=RUNNING")
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == "status"


def test_an_advert_shows_what_the_pipeline_stored(
    stack: Stack, adverts: advert_service_pb2_grpc.AdvertServiceStub
) -> None:
    advert = advert_service_pb2.Advert(
        source_key="s3:videos/test-ad.mp4", transcript="Feel the fizz."
    )
    advert.media.update({"duration_seconds": 8, "width": 640, "height": 360})
    advert.analysis.update({"brand": "Sparkle Cola", "claims": ["zero sugar"]})
    advert.provenance.update({"providers": {"transcription": "openai:whisper-1"}, "skipped": {}})
    advert.keyframes.add(timestamp_seconds=1.5, uri="s3://bucket/k/0.jpg", width=640, height=360)
    advert.chunks.add(
        index=0, kind="transcript", text="Feel the fizz.", embedding=[0.5] * 4,
        embedding_model="text-embedding-3-small",
    )  # fmt: skip
    job = insert_job(stack.db, status="RUNNING")
    request = advert_service_pb2.StoreAdvertRequest(
        advert=advert, job_id=str(job["id"]), lease=job["lease"]
    )
    ad_id = adverts.StoreAdvert(request).ad_id

    answer = stack.http.get(f"/api/ingest/adverts/{ad_id}")
    assert answer.status_code == 200
    shown = answer.json()["advert"]
    assert shown["id"] == ad_id and shown["source_key"] == "s3:videos/test-ad.mp4"
    assert shown["media"] == {"duration_seconds": 8, "width": 640, "height": 360}
    assert shown["transcript"] == "Feel the fizz."
    assert shown["analysis"] == {"brand": "Sparkle Cola", "claims": ["zero sugar"]}
    assert shown["provenance"]["providers"] == {"transcription": "openai:whisper-1"}
    assert shown["keyframes"] == [
        {"timestamp_seconds": 1.5, "uri": "s3://bucket/k/0.jpg", "width": 640, "height": 360}
    ]
    # The vector stays out of the page; its size is said.
    assert shown["chunks"] == [
        {
            "index": 0,
            "kind": "transcript",
            "text": "Feel the fizz.",
            "embedding_model": "text-embedding-3-small",
            "embedding_dimension": 4,
        }
    ]
    assert shown["job_id"] == str(job["id"]) and shown["created_at"] is not None


def test_an_unknown_advert_is_404(shared_stack: Stack) -> None:
    answer = shared_stack.http.get(f"/api/ingest/adverts/{uuid.uuid4()}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("ad_id", ["not-a-uuid", "123", "' OR 1=1 --", "%00"])
def test_an_advert_id_that_is_not_a_uuid_is_400(shared_stack: Stack, ad_id: str) -> None:
    answer = shared_stack.http.get(f"/api/ingest/adverts/{ad_id}")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_ARGUMENT", "ad_id")
