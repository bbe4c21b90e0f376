"""Waiting claims are woken by NOTIFY and by their queue's due timer, not by a re-poll.

Every transition that leaves a job QUEUED or RETRY announces it through notify_queue
(migrations/job_queue/notify.sql): how many jobs of the queue may run now, and when the earliest
of the others comes due. queue_service/notify.py LISTENs, and queue_service/claims.py wakes as
many waiters as there are new jobs and arms a timer for the due ones. A notification is only sent
if the statement that sends it really runs: these tests listen on the channel themselves, so a
NOTIFY that the planner optimised away (a CTE joined but never scanned) fails them instead of
hiding behind the claim's safety re-check, which the service tests push out to a minute.

A transition that must *not* wake anyone is checked by ordering: notifications are delivered in
commit order, so when the silent transition is followed by one on another queue, the first
notification that wakes anyone must be the second one's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2
from psycopg.types.json import Jsonb

from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import queue_service_pb2 as queue_pb
from jobqueue.v1 import queue_service_pb2_grpc
from queue_service import claims
from queue_service.notify import Announcement, parse
from queue_service.server import build
from tests.support.grpc_server import RunningQueue, running_queue, service_config
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


def announcements(listener: Conn, timeout: float = NOTIFY_TIMEOUT) -> Iterator[dict[str, Any]]:
    """The payloads of the notifications that arrive in `timeout`. (One generator for all of
    them: notifications that arrive together are read together.)"""
    for notification in listener.notifies(timeout=timeout):
        assert notification.channel == "ingestion_jobs"
        yield json.loads(notification.payload)


def next_announcement(listener: Conn, timeout: float = NOTIFY_TIMEOUT) -> dict[str, Any] | None:
    with closing(announcements(listener, timeout)) as payloads:
        return next(payloads, None)


def next_wakeup(listener: Conn) -> str | None:
    """The queue of the next notification that makes jobs runnable now (one that only announces
    a later due time wakes nobody), or None if none comes in NOTIFY_TIMEOUT."""
    for payload in announcements(listener):
        if payload["runnable"]:
            return str(payload["queue"])
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


def test_an_announcement_counts_the_jobs_that_may_run_and_names_the_next_due_time(
    db: Conn, listener: Conn
) -> None:
    inputs = [Jsonb({"path": f"/media/{i}.mp4"}) for i in range(4)]
    db.execute(
        """
        SELECT enqueue_jobs(%s::jsonb[], '{media,media,media,media}', '{0,0,0,0}', '{0,0,0,0}',
                            '{"","","",""}',
                            ARRAY[NULL, NULL, now() + interval '30 s', now() + interval '90 s'])
        """,
        (inputs,),
    )
    payload = next_announcement(listener)
    assert payload is not None
    assert (payload["queue"], payload["runnable"]) == ("media", 2)
    assert 25 < payload["due_in"] <= 30


def test_a_failure_in_backoff_announces_when_its_retry_comes_due(db: Conn, listener: Conn) -> None:
    job = running(db, "backoff")
    db.execute(
        "SELECT fail_job(%s, %s, 'E', 'boom', p_retry_after => 42)", (job["id"], job["lease"])
    )
    payload = next_announcement(listener)
    assert payload is not None
    assert (payload["queue"], payload["runnable"]) == ("backoff", 0)
    assert 40 < payload["due_in"] <= 42


def test_a_payload_is_read_as_counted_or_as_a_bare_queue_name() -> None:
    assert parse('{"queue": "media", "runnable": 3, "due_in": null}') == Announcement("media", 3)
    assert parse('{"queue": "q", "runnable": 0, "due_in": 9.5}') == Announcement("q", 0, 9.5)
    # What notify_queue sent before it counted, or an operator's NOTIFY: wakes every waiter.
    assert parse("media") == Announcement("media", None)
    assert parse("{not json") == Announcement("{not json", None)
    assert parse('{"queue": 7, "runnable": 1}') == Announcement('{"queue": 7, "runnable": 1}', None)
    # Any other JSON an operator may send is a (nonexistent) queue's name, never an error.
    for payload in ("{}", '{"queue": "media"}', '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        assert parse(payload) == Announcement(payload, None)


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


async def test_a_waiting_claim_is_answered_empty_when_the_service_stops(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not cancelled at the end of the grace: a worker would take CANCELLED for a refusal.
    monkeypatch.setattr(claims, "RECHECK_SECONDS", 60.0)
    service = await build(service_config(database_url))
    await service.start()
    await service.notifier.listening.wait()
    found_nothing = asyncio.Event()
    claim_once = service.store.claim

    async def observed_claim(*args: Any) -> list[dict[str, Any]]:
        rows = await claim_once(*args)
        if not rows:
            found_nothing.set()
        return rows

    monkeypatch.setattr(service.store, "claim", observed_claim)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        request = queue_pb.ClaimRequest(worker_id="w", max_jobs=1)
        request.wait.FromSeconds(30)
        claim = asyncio.ensure_future(
            queue_service_pb2_grpc.QueueServiceStub(channel).Claim(request)
        )
        await asyncio.wait_for(found_nothing.wait(), 10)  # the claim is now waiting
        stopping = asyncio.ensure_future(service.stop(grace=20))
        response = await asyncio.wait_for(claim, 10)  # well inside the grace
        assert list(response.jobs) == []
        await asyncio.wait_for(stopping, 30)


# -- the service: how many claims a wake-up costs ---------------------------------------------


@asynccontextmanager
async def counted_claims(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RunningQueue, list[int]]]:
    """The queue service with its safety re-check pushed out to a minute, and a list that each
    claim statement appends the number of jobs it claimed to."""
    monkeypatch.setattr(claims, "RECHECK_SECONDS", 60.0)
    async with running_queue(service_config(database_url)) as qs:
        store = qs.service.store
        claim_once = store.claim
        statements: list[int] = []

        async def counted_claim(*args: Any) -> Any:
            rows = await claim_once(*args)
            statements.append(len(rows))
            return rows

        monkeypatch.setattr(store, "claim", counted_claim)
        yield qs, statements


def waiting_claims(qs: RunningQueue, n: int, wait: float = 20, queue: str = "") -> list[Any]:
    request = queue_pb.ClaimRequest(worker_id="w", max_jobs=1, queue=queue)
    request.wait.FromSeconds(int(wait))
    return [asyncio.ensure_future(qs.queue.Claim(request)) for _ in range(n)]


async def all_asleep(qs: RunningQueue, n: int, queue: str = "default") -> None:
    """Until `n` Claim calls wait in the queue's line, none of them looking."""
    claimer = qs.service.claimer

    def asleep() -> bool:
        line = claimer._lines.get(queue)
        return line is not None and sum(not w.claiming for w in line.asleep) == n

    deadline = time.monotonic() + 20
    while not asleep():
        assert time.monotonic() < deadline, "the claims did not all start waiting"
        await asyncio.sleep(0.01)


def enqueue_request(name: str) -> admin_pb.EnqueueJobRequest:
    input_ = struct_pb2.Struct()
    input_.update({"source_type": "local", "path": f"/media/{name}.mp4"})
    return admin_pb.EnqueueJobRequest(input=input_)


@pytest.mark.parametrize("jobs", [1, 3])
async def test_new_jobs_wake_as_many_of_five_waiting_claims_as_there_are_jobs(
    database_url: str, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    async with counted_claims(database_url, monkeypatch) as (qs, statements):
        calls = waiting_claims(qs, 5)
        await all_asleep(qs, 5)
        statements.clear()

        await qs.admin.EnqueueJobs(
            admin_pb.EnqueueJobsRequest(
                jobs=[enqueue_request(f"{jobs}-of-5-{i}") for i in range(jobs)]
            )
        )
        claimed = 0
        while claimed < jobs:
            done, _ = await asyncio.wait(calls, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            assert done, "a woken claim did not return"
            claimed += sum(len(call.result().jobs) for call in done)
            calls = [call for call in calls if call not in done]
        await asyncio.sleep(0.5)  # room for any other claim to run: none may
        assert statements == [1] * jobs
        assert len(calls) == 5 - jobs and not any(call.done() for call in calls)
        for call in calls:
            call.cancel()


async def listener_pid(conn: psycopg.AsyncConnection[Any]) -> int | None:
    """The backend of the queue service's listening connection (its last statement: LISTEN)."""
    cur = await conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query = 'LISTEN ingestion_jobs' AND pid <> pg_backend_pid()"
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def test_a_listener_whose_connection_is_cut_listens_again_and_wakes_claims(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Neither re-check can end the wait (nor does the wake-up of all waiters at the reconnect:
    # the claim starts waiting after it): only an announcement heard on the new connection can.
    monkeypatch.setattr(claims, "UNHEARD_RECHECK_SECONDS", 60.0)
    async with counted_claims(database_url, monkeypatch) as (qs, statements):
        await asyncio.wait_for(qs.service.notifier.listening.wait(), 10)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
            cut = await listener_pid(db)
            assert cut is not None
            await db.execute("SELECT pg_terminate_backend(%s)", (cut,))
            deadline = time.monotonic() + 20
            while (await listener_pid(db)) in (None, cut):
                assert time.monotonic() < deadline, "the service did not listen again"
                await asyncio.sleep(0.05)
        calls = waiting_claims(qs, 1)
        await all_asleep(qs, 1)
        statements.clear()
        await qs.admin.EnqueueJob(enqueue_request("after-the-cut"))
        answer = await asyncio.wait_for(calls[0], 10)
        assert len(answer.jobs) == 1
        assert statements == [1]  # woken once, by the announcement


async def test_an_announcement_that_fails_does_not_hold_back_those_that_came_with_it(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with counted_claims(database_url, monkeypatch) as (qs, statements):
        claimer = qs.service.claimer
        hand_on = claimer.announced

        def announced(announcement: Announcement) -> None:
            if announcement.queue == "boom":
                raise RuntimeError("a subscriber's bug")
            hand_on(announcement)

        monkeypatch.setattr(claimer, "announced", announced)
        calls = waiting_claims(qs, 1)
        await all_asleep(qs, 1)
        statements.clear()
        # Both arrive at the one commit, in one read of the socket: the failing one first.
        async with await psycopg.AsyncConnection.connect(database_url) as db:
            await db.execute("NOTIFY ingestion_jobs, 'boom'")
            await db.execute(
                "SELECT enqueue_job(%s)", (Jsonb({"source_type": "local", "path": "/media/b.mp4"}),)
            )
            await db.commit()
        answer = await asyncio.wait_for(calls[0], 10)
        assert len(answer.jobs) == 1
        assert statements == [1]


async def test_a_hundred_idle_waiting_claims_run_no_statement(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with counted_claims(database_url, monkeypatch) as (qs, statements):
        calls = waiting_claims(qs, 100)
        await all_asleep(qs, 100)
        statements.clear()
        # A new Claim that finds others asleep in its line does not look either.
        calls += waiting_claims(qs, 1)
        await all_asleep(qs, 101)

        await asyncio.sleep(3)
        assert statements == []
        for call in calls:
            call.cancel()


async def test_a_waiting_claim_takes_a_retry_job_when_its_backoff_runs_out_unannounced(
    database_url: str, monkeypatch: pytest.MonkeyPatch, db: Conn, listener: Conn
) -> None:
    # Written by hand, as an operator would: no NOTIFY tells anyone when it comes due, so only
    # the due time the service looks up when a line forms can.
    job = insert_job(db, status="RETRY", attempts=1, lease=1, seconds_ago={"run_after": -1.5})
    async with counted_claims(database_url, monkeypatch) as (qs, statements):
        started = time.monotonic()
        [call] = waiting_claims(qs, 1)
        response = await asyncio.wait_for(call, 15)
        assert [j.id for j in response.jobs] == [str(job["id"])]
        assert 1.0 < time.monotonic() - started < 10
        assert statements[-1] == 1
    assert next_announcement(listener, timeout=0.1) is None


async def test_a_waiting_claim_takes_a_failed_job_when_its_announced_backoff_runs_out(
    database_url: str, monkeypatch: pytest.MonkeyPatch, db: Conn
) -> None:
    async with counted_claims(database_url, monkeypatch) as (qs, _):
        [call] = waiting_claims(qs, 1)
        await all_asleep(qs, 1)
        job = running(db)
        started = time.monotonic()
        db.execute(
            "SELECT fail_job(%s, %s, 'E', 'boom', p_retry_after => 1.5)", (job["id"], job["lease"])
        )
        response = await asyncio.wait_for(call, 15)
        assert [j.id for j in response.jobs] == [str(job["id"])]
        assert 1.0 < time.monotonic() - started < 10
