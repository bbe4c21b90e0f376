"""Waiting claims are woken by NOTIFY, not by their re-poll.

Every transition that leaves a job runnable at once calls notify_queue (migrations/job_queue/
notify.sql), and queue_service/notify.py LISTENs. A notification is only sent if the statement
that sends it really runs: these tests listen on the channel themselves, so a NOTIFY that the
planner optimised away (a CTE joined but never scanned) fails them instead of hiding behind the
claim's one-second re-check.

A transition that must *not* wake anyone is checked by ordering: notifications are delivered in
commit order, so when the silent transition is followed by one on another queue, the first
notification to arrive must be the second one's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from google.protobuf import struct_pb2
from psycopg.types.json import Jsonb

from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import queue_service_pb2 as queue_pb
from queue_service import claims
from tests.support.grpc_server import running_queue, service_config
from tests.support.jobs import insert_job

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]

# Long enough for a loaded 2-core machine; a notification that arrives comes within milliseconds.
NOTIFY_TIMEOUT = 5.0


@pytest.fixture
def listener(database_url: str) -> Iterator[Conn]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("LISTEN ingestion_jobs")
        yield conn


def next_wakeup(listener: Conn) -> str | None:
    """The queue named by the next notification, or None if none comes in NOTIFY_TIMEOUT."""
    for notification in listener.notifies(timeout=NOTIFY_TIMEOUT, stop_after=1):
        assert notification.channel == "ingestion_jobs"
        return notification.payload
    return None


def enqueue(db: Conn, queue: str, run_after: str | None = None) -> Any:
    row = db.execute(
        "SELECT job_id FROM enqueue_job(%s, %s, p_run_after => %s::timestamptz)",
        (Jsonb({"source_type": "local", "path": f"/media/{queue}.mp4"}), queue, run_after),
    ).fetchone()
    assert row is not None
    return row[0]


def running(db: Conn, queue: str = "default", **fields: Any) -> dict[str, Any]:
    return insert_job(db, status="RUNNING", queue=queue, **fields)


def test_enqueue_wakes_the_jobs_queue(db: Conn, listener: Conn) -> None:
    enqueue(db, "media")
    assert next_wakeup(listener) == "media"


def test_an_enqueue_of_a_known_key_or_of_a_later_job_wakes_nobody(db: Conn, listener: Conn) -> None:
    enqueue(db, "known")
    assert next_wakeup(listener) == "known"
    enqueue(db, "known")  # already_existed: nothing new to claim
    enqueue(db, "later", run_after="infinity")  # not claimable before its run_after
    enqueue(db, "now")
    assert next_wakeup(listener) == "now"


def test_retry_wakes_the_jobs_queue(db: Conn, listener: Conn) -> None:
    job = insert_job(db, status="FAILED", queue="media")
    assert db.execute("SELECT outcome FROM retry_job(%s)", (job["id"],)).fetchone() == ("retried",)
    assert next_wakeup(listener) == "media"


def test_release_wakes_the_jobs_queue_unless_it_ends_cancelled(db: Conn, listener: Conn) -> None:
    cancelled = running(db, "cancelled", seconds_ago={"cancel_requested_at": 0})
    released = running(db, "media")
    release = "SELECT status FROM release_job(ARRAY[%s]::uuid[], ARRAY[%s]::bigint[], '{bye}')"
    assert db.execute(release, (cancelled["id"], cancelled["lease"])).fetchone() == ("CANCELLED",)
    assert db.execute(release, (released["id"], released["lease"])).fetchone() == ("QUEUED",)
    assert next_wakeup(listener) == "media"


def test_a_failure_wakes_the_queue_only_when_the_retry_is_due_at_once(
    db: Conn, listener: Conn
) -> None:
    fail = """
        SELECT status FROM fail_job(ARRAY[%s]::uuid[], ARRAY[%s]::bigint[], '{E}', '{boom}',
                                    '{true}', ARRAY[%s]::double precision[])
    """
    later = running(db, "backoff")
    due = running(db, "due")
    assert db.execute(fail, (later["id"], later["lease"], None)).fetchone() == ("RETRY",)
    assert db.execute(fail, (due["id"], due["lease"], 0)).fetchone() == ("RETRY",)
    assert next_wakeup(listener) == "due"


def test_a_stale_release_wakes_the_queues_of_the_jobs_it_retries(db: Conn, listener: Conn) -> None:
    running(db, "dead-letter", attempts=5, max_attempts=5, seconds_ago={"locked_at": 600})
    running(db, "media", seconds_ago={"locked_at": 600})
    rows = db.execute("SELECT status FROM release_stale_jobs(120, 1800) ORDER BY 1").fetchall()
    assert rows == [("FAILED",), ("RETRY",)]
    assert next_wakeup(listener) == "media"


async def test_a_waiting_claim_returns_when_a_job_is_enqueued_not_when_it_re_polls(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the re-poll out of the way, only the notification can end the wait early.
    monkeypatch.setattr(claims, "RECHECK_SECONDS", 60.0)
    async with running_queue(service_config(database_url)) as qs:
        store = qs.service.store
        found_nothing = asyncio.Event()
        claim_once = store.claim

        async def observed_claim(*args: Any) -> list[dict[str, Any]]:
            rows = await claim_once(*args)
            if not rows:
                found_nothing.set()
            return rows

        monkeypatch.setattr(store, "claim", observed_claim)
        request = queue_pb.ClaimRequest(worker_id="w", max_jobs=1)
        request.wait.FromSeconds(20)
        claim = asyncio.ensure_future(qs.queue.Claim(request))
        await asyncio.wait_for(found_nothing.wait(), 10)  # the claim is now waiting

        input_ = struct_pb2.Struct()
        input_.update({"source_type": "local", "path": "/media/wake.mp4"})
        enqueued = time.monotonic()
        await qs.admin.EnqueueJob(admin_pb.EnqueueJobRequest(input=input_))
        response = await asyncio.wait_for(claim, 30)
        assert len(response.jobs) == 1
        # Woken: well before the 20 s wait (or a 60 s re-poll) would have ended it.
        assert time.monotonic() - enqueued < 5
