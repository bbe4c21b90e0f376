"""The gRPC layer refuses what the REST API refuses, and bounds everything a client can push.

Issue 11, items 4 and 9: EnqueueJob stored inputs that REST refuses (an empty s3_key, a local
path climbing out with `..`, no source_type) as QUEUED jobs; a NaN or a run_after of 10^13
seconds was INTERNAL with a stack trace in the log; 300 Claims with distinct 1 MB queue names
grew the service by 300 MiB for good. Each is INVALID_ARGUMENT now, naming the field, with
nothing stored and nothing logged as an error.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from jobqueue.rpc import error_info
from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import queue_service_pb2 as queue_pb
from tests.support.grpc_server import RunningQueue, running_queue, service_config
from tests.support.jobs import insert_job

pytestmark = pytest.mark.integration


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _seconds(value: int) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromSeconds(value)
    return message


def ok_input(key: str = "videos/ok.mp4") -> struct_pb2.Struct:
    return struct({"source_type": "s3", "s3_key": key})


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    """The ERROR records (stack traces among them) the service has logged so far."""
    caplog.set_level(logging.WARNING)

    def errors() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]

    return errors


async def refused(call: Any, field: str) -> str:
    """The call is INVALID_ARGUMENT naming `field`; its message."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    info = error_info(raised.value)
    assert info is not None and info.metadata["field"] == field
    return raised.value.details() or ""


def job_count(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM ingestion_jobs").fetchone()
    assert row is not None
    return int(row[0])


# (request, field at fault): item 9's examples first.
BAD_ENQUEUES: list[tuple[admin_pb.EnqueueJobRequest, str]] = [
    (admin_pb.EnqueueJobRequest(input=struct({"source_type": "s3", "s3_key": ""})), "input.s3_key"),
    (
        admin_pb.EnqueueJobRequest(
            input=struct({"source_type": "local", "path": "../../etc/shadow"})
        ),
        "input.path",
    ),
    (admin_pb.EnqueueJobRequest(input=struct({"s3_key": "videos/a.mp4"})), "input.source_type"),
    (
        admin_pb.EnqueueJobRequest(
            input=struct({"source_type": "s3", "s3_key": "videos/a.mp4", "frames": math.nan})
        ),
        "input",
    ),
    (
        admin_pb.EnqueueJobRequest(
            input=struct({"source_type": "s3", "s3_key": "videos/a.mp4", "n": [math.inf]})
        ),
        "input",
    ),
    (
        admin_pb.EnqueueJobRequest(
            input=ok_input(), run_after=timestamp_pb2.Timestamp(seconds=10**13)
        ),
        "run_after",
    ),
    (
        admin_pb.EnqueueJobRequest(
            input=ok_input(), run_after=timestamp_pb2.Timestamp(seconds=5, nanos=-1)
        ),
        "run_after",
    ),
    (
        admin_pb.EnqueueJobRequest(
            input=ok_input(), run_after=timestamp_pb2.Timestamp(seconds=-62_135_596_801)
        ),
        "run_after",
    ),
    # The bounds of jobqueue.limits.
    (admin_pb.EnqueueJobRequest(input=ok_input(), queue="q" * 101), "queue"),
    (admin_pb.EnqueueJobRequest(input=ok_input(), queue="q" * (1 << 20)), "queue"),
    (admin_pb.EnqueueJobRequest(input=ok_input(), queue="media queue"), "queue"),
    (admin_pb.EnqueueJobRequest(input=ok_input(), queue="media\x00"), "queue"),
    (admin_pb.EnqueueJobRequest(input=ok_input(), priority=1001), "priority"),
    (admin_pb.EnqueueJobRequest(input=ok_input(), priority=-1001), "priority"),
    (admin_pb.EnqueueJobRequest(input=ok_input(), max_attempts=101), "max_attempts"),
    (admin_pb.EnqueueJobRequest(input=ok_input(), idempotency_key="k" * 501), "idempotency_key"),
    (admin_pb.EnqueueJobRequest(input=ok_input(), idempotency_key="a\x00b"), "idempotency_key"),
    (
        admin_pb.EnqueueJobRequest(
            input=struct({"source_type": "s3", "s3_key": "videos/a.mp4", "pad": "x" * 262_144})
        ),
        "input",
    ),
]


@pytest.mark.parametrize(("request_", "field"), BAD_ENQUEUES, ids=lambda v: str(v)[:60])
async def test_enqueue_refuses_what_rest_refuses_and_logs_no_error(
    qs: RunningQueue,
    db: psycopg.Connection[Any],
    errors_logged: Callable[[], list[logging.LogRecord]],
    request_: admin_pb.EnqueueJobRequest,
    field: str,
) -> None:
    message = await refused(qs.admin.EnqueueJob(request_), field)
    assert "Traceback" not in message
    await refused(qs.admin.EnqueueJobs(admin_pb.EnqueueJobsRequest(jobs=[request_])), field)
    assert job_count(db) == 0
    assert errors_logged() == []


async def test_one_bad_entry_refuses_a_whole_batch(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    jobs = [
        admin_pb.EnqueueJobRequest(input=ok_input("videos/good.mp4")),
        admin_pb.EnqueueJobRequest(input=struct({"source_type": "s3", "s3_key": ""})),
    ]
    await refused(qs.admin.EnqueueJobs(admin_pb.EnqueueJobsRequest(jobs=jobs)), "input.s3_key")
    assert job_count(db) == 0


async def test_limits_at_their_edge_are_accepted(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    queue = "a" + "b._:/-" * 16 + "c" * 3  # 100 characters
    answer = await qs.admin.EnqueueJob(
        admin_pb.EnqueueJobRequest(
            input=struct({"source_type": "s3", "s3_key": "videos/edge.mp4", "extra": "kept"}),
            queue=queue,
            priority=-1000,
            max_attempts=100,
            idempotency_key="k" * 500,
            run_after=timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999),
        )
    )
    assert not answer.already_existed and answer.job.queue == queue
    row = db.execute("SELECT input, run_after FROM ingestion_jobs").fetchone()
    assert row is not None and row[0]["extra"] == "kept" and row[1].year == 9999
    # Not due before year 9999: a waiting Claim on its queue answers empty.
    request = queue_pb.ClaimRequest(worker_id="w", max_jobs=1, queue=queue)
    request.wait.FromMilliseconds(200)
    assert not (await qs.queue.Claim(request)).jobs


async def test_a_claim_with_a_huge_queue_name_is_refused_and_leaves_nothing_behind(
    qs: RunningQueue, errors_logged: Callable[[], list[logging.LogRecord]]
) -> None:
    claimer = qs.service.claimer
    for i in range(20):
        request = queue_pb.ClaimRequest(
            worker_id="w", max_jobs=1, queue=f"{i}" + "q" * (1 << 20), wait=_seconds(5)
        )
        await refused(qs.queue.Claim(request), "queue")
    assert claimer._lines == {}
    assert errors_logged() == []


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (queue_pb.ClaimRequest(worker_id="", max_jobs=1), "worker_id"),
        (queue_pb.ClaimRequest(worker_id="   ", max_jobs=1), "worker_id"),
        (queue_pb.ClaimRequest(worker_id="w" * 201, max_jobs=1), "worker_id"),
        (queue_pb.ClaimRequest(worker_id="w\x00", max_jobs=1), "worker_id"),
        (queue_pb.ClaimRequest(worker_id="w", max_jobs=1, queue="a b"), "queue"),
        (queue_pb.ClaimRequest(worker_id="w", max_jobs=1, queue="-a"), "queue"),
        (queue_pb.ClaimRequest(worker_id="w", max_jobs=1001), "max_jobs"),
        (queue_pb.ClaimRequest(worker_id="w", max_jobs=1, wait=_seconds(61)), "wait"),
        (queue_pb.ClaimRequest(worker_id="w", max_jobs=1, wait=_seconds(-1)), "wait"),
        (
            queue_pb.ClaimRequest(
                worker_id="w", max_jobs=1, wait=duration_pb2.Duration(seconds=1, nanos=-5)
            ),
            "wait",
        ),
        (
            queue_pb.ClaimRequest(
                worker_id="w", max_jobs=1, wait=duration_pb2.Duration(seconds=10**13)
            ),
            "wait",
        ),
    ],
    ids=lambda v: str(v)[:60],
)
async def test_claim_bounds(
    qs: RunningQueue,
    errors_logged: Callable[[], list[logging.LogRecord]],
    request_: Any,
    field: str,
) -> None:
    await refused(qs.queue.Claim(request_), field)
    assert errors_logged() == []


@pytest.mark.parametrize(
    "call",
    [
        lambda qs: qs.admin.ListJobs(admin_pb.ListJobsRequest(queue="q" * 201)),
        lambda qs: qs.admin.GetQueueStats(admin_pb.GetQueueStatsRequest(queue="q" * 201)),
        lambda qs: qs.admin.ListRunningJobs(admin_pb.ListRunningJobsRequest(queue="q\x00")),
    ],
)
async def test_queue_filters_are_bounded(qs: RunningQueue, call: Any) -> None:
    await refused(call(qs), "queue")


async def test_a_queue_made_in_psql_can_still_be_listed(
    qs: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    insert_job(db, queue="made in psql")
    answer = await qs.admin.ListJobs(admin_pb.ListJobsRequest(queue="made in psql"))
    assert [job.queue for job in answer.jobs] == ["made in psql"]


async def test_fail_retry_after_is_bounded(qs: RunningQueue, db: psycopg.Connection[Any]) -> None:
    row = insert_job(db, status="RUNNING")
    for retry_after in (
        duration_pb2.Duration(seconds=10**13),
        duration_pb2.Duration(seconds=366 * 86_400 + 1),
        duration_pb2.Duration(seconds=-1),
        duration_pb2.Duration(seconds=-1, nanos=5),
    ):
        request = queue_pb.FailRequest(
            job_id=str(row["id"]), lease=1, retryable=True, retry_after=retry_after
        )
        await refused(qs.queue.Fail(request), "retry_after")
    assert db.execute("SELECT status FROM ingestion_jobs").fetchone() == ("RUNNING",)


async def test_local_paths_are_confined_to_local_media_root(
    database_url: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    root = tmp_path / "media"
    async with running_queue(service_config(database_url, local_media_root=root)) as qs:
        for path in (str(root / "ad.mp4"), "ads/ad.mp4"):
            request = admin_pb.EnqueueJobRequest(
                input=struct({"source_type": "local", "path": path})
            )
            assert not (await qs.admin.EnqueueJob(request)).already_existed
        for path in ("/etc/shadow", f"{root}x/ad.mp4", f"{root}/../outside.mp4"):
            request = admin_pb.EnqueueJobRequest(
                input=struct({"source_type": "local", "path": path})
            )
            message = await refused(qs.admin.EnqueueJob(request), "input.path")
            assert "LOCAL_MEDIA_ROOT" in message or "'..'" in message
    # The input is stored as sent: the worker resolves a relative path inside its own root.
    rows = db.execute("SELECT input->>'path' FROM ingestion_jobs ORDER BY created_at").fetchall()
    assert sorted(path for (path,) in rows) == sorted([str(root / "ad.mp4"), "ads/ad.mp4"])


async def test_waiting_claims_on_many_queue_names_leave_no_line_behind(qs: RunningQueue) -> None:
    # Each name's line (with its due time looked up in the database, and its timers) lived on
    # after its last Claim returned: memory grew with every distinct name, for good.
    async def claim(name: str) -> int:
        request = queue_pb.ClaimRequest(worker_id="w", max_jobs=1, queue=name)
        request.wait.FromMilliseconds(200)
        return len((await qs.queue.Claim(request)).jobs)

    names = [f"queue-{i:03d}-" + "x" * 88 for i in range(60)]
    assert await asyncio.gather(*(claim(name) for name in names)) == [0] * 60
    assert qs.service.claimer._lines == {}
