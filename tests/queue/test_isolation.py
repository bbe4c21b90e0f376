"""No job harms another: a row lock held on one job stalls nothing else, and the reaper does not
release a job whose beats met that lock (issue 11, item 1; docs/state-machine.md, "A beat that
finds its row locked")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobqueue.rpc import error_reason
from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import job_pb2
from jobqueue.v1 import queue_service_pb2 as queue_pb
from queue_service.config import Config
from tests.support.grpc_server import RunningQueue, running_queue, service_config
from tests.support.jobs import fetch_job, insert_job
from tests.support.plans import nested_plans, nodes
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]
CONTINUE = queue_pb.HEARTBEAT_ACTION_CONTINUE


@pytest.fixture
def locker(database_url: str) -> Iterator[Conn]:
    """A second session, as an operator's psql or a StoreAdvert in progress would be."""
    with psycopg.connect(database_url) as conn:
        yield conn
        conn.rollback()


def beat(db: Conn, *jobs: dict[str, Any]) -> dict[Any, str]:
    # On main this waited on the locked row for as long as it was held: the statement timeout
    # turns that into a failure instead of a hang.
    db.execute("SET statement_timeout = '5s'")
    rows = db.execute(
        "SELECT job_id, action FROM update_job_heartbeat(%s::uuid[], %s::bigint[], %s, %s)",
        (
            [job["id"] for job in jobs],
            [job["lease"] for job in jobs],
            ["transcription"] * len(jobs),
            [0.5] * len(jobs),
        ),
    ).fetchall()
    return dict(rows)


def test_a_locked_row_does_not_stall_the_beats_of_other_jobs(db: Conn, locker: Conn) -> None:
    locked, b, c = (
        insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 30}) for _ in range(3)
    )
    locker.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR SHARE", (locked["id"],))

    actions = beat(db, locked, b, c)

    assert actions == {locked["id"]: "deferred", b["id"]: "continue", c["id"]: "continue"}
    for job in (b, c):
        assert fetch_job(db, job["id"])["stage"] == "transcription"
    # The locked job's beat is kept beside its row, which it could not write.
    [(lease, age)] = db.execute(
        "SELECT lease, extract(epoch FROM clock_timestamp() - beat_at) "
        "FROM ingestion_job_deferred_beats WHERE job_id = %s",
        (locked["id"],),
    ).fetchall()
    assert lease == locked["lease"] and age < 5


def test_a_locked_job_hears_cancel_and_lease_lost_from_its_committed_row(
    db: Conn, locker: Conn
) -> None:
    cancelled = insert_job(db, status="RUNNING")
    db.execute("SELECT cancel_job(%s)", (cancelled["id"],))
    moved_on = insert_job(db, status="RUNNING", lease=3)
    locker.execute(
        "SELECT 1 FROM ingestion_jobs WHERE id = ANY(%s) FOR UPDATE",
        ([cancelled["id"], moved_on["id"]],),
    )

    stale_claim = {**moved_on, "lease": 2}
    assert beat(db, cancelled, stale_claim) == {
        cancelled["id"]: "cancel",
        moved_on["id"]: "lease_lost",
    }
    [(count,)] = db.execute(
        "SELECT count(*) FROM ingestion_job_deferred_beats WHERE job_id = %s",
        (moved_on["id"],),
    ).fetchall()
    assert count == 0


def test_the_sweep_counts_a_beat_that_met_a_lock(db: Conn, locker: Conn) -> None:
    # Silent in its row for 60 s, but beaten a moment ago while its row was locked.
    beaten = insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 60})
    silent = insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 60})
    locker.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR SHARE", (beaten["id"],))
    assert beat(db, beaten) == {beaten["id"]: "deferred"}
    locker.rollback()  # the lock goes away before the sweep

    released = db.execute("SELECT job_id FROM release_stale_jobs(6, 1800)").fetchall()

    assert released == [(silent["id"],)]
    assert fetch_job(db, beaten["id"])["status"] == "RUNNING"
    # Its next beat lands in the row as usual.
    assert beat(db, beaten) == {beaten["id"]: "continue"}


def test_the_sweep_forgets_deferred_beats_older_than_the_timeout(db: Conn) -> None:
    job = insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 60})
    db.execute(
        "INSERT INTO ingestion_job_deferred_beats "
        "VALUES (%s, %s, clock_timestamp() - '30 s'::interval)",
        (job["id"], job["lease"]),
    )

    released = db.execute("SELECT job_id FROM release_stale_jobs(6, 1800)").fetchall()

    assert released == [(job["id"],)]
    assert db.execute("SELECT count(*) FROM ingestion_job_deferred_beats").fetchone() == (0,)


def test_a_beat_of_another_claim_does_not_keep_a_job(db: Conn) -> None:
    job = insert_job(db, status="RUNNING", lease=2, seconds_ago={"last_heartbeat_at": 60})
    db.execute(
        "INSERT INTO ingestion_job_deferred_beats VALUES (%s, 1, clock_timestamp())", (job["id"],)
    )

    released = db.execute("SELECT job_id FROM release_stale_jobs(6, 1800)").fetchall()

    assert released == [(job["id"],)]


def sweep_plan(db: Conn) -> list[dict[str, Any]]:
    """The executed plan of the sweep's statement over the job table, by auto_explain."""
    plans = [
        plan["Plan"]
        for plan in nested_plans(db, "SELECT job_id FROM release_stale_jobs(6, 1800)")
        if "ingestion_jobs s" in plan["Query Text"]
    ]
    assert len(plans) == 1
    return plans


def test_the_sweep_reads_the_deferred_beats_once_however_many_jobs_run(db: Conn) -> None:
    """Its cost is running + deferred beats, not their product: a lookup per RUNNING job once
    scanned every deferred beat for each (4 s a sweep at 10,000 jobs and 5,000 beats)."""
    db.execute(
        "INSERT INTO ingestion_jobs (status, input, idempotency_key, locked_at, locked_by,"
        " last_heartbeat_at, lease, attempts)"
        " SELECT 'RUNNING', jsonb_build_object('n', g), 'k' || g, clock_timestamp(), 'w',"
        "        clock_timestamp() - interval '60 s', 1, 1"
        " FROM generate_series(1, 400) g"
    )
    # Half of them beaten a moment ago while their rows were locked.
    db.execute(
        "INSERT INTO ingestion_job_deferred_beats (job_id, lease, beat_at)"
        " SELECT id, lease, clock_timestamp() FROM ingestion_jobs"
        " WHERE idempotency_key::text ~ '[02468]$'"
    )
    beaten = {row[0] for row in db.execute("SELECT job_id FROM ingestion_job_deferred_beats")}

    [plan] = sweep_plan(db)

    scans = [node for node in nodes(plan) if node["Node Type"] == "Function Scan"]
    assert scans and all(node["Actual Loops"] == 1 for node in scans), scans
    assert not [node for node in nodes(plan) if node.get("Parent Relationship") == "SubPlan"]
    still = {row[0] for row in db.execute("SELECT id FROM ingestion_jobs WHERE status = 'RUNNING'")}
    assert still == beaten and len(beaten) == 200


# -- through the service ------------------------------------------------------------------------


async def until_waiting_on_locks(db: Conn, count: int) -> None:
    """Until `count` sessions of this database wait on a lock."""
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while db.execute(query).fetchone()[0] < count:  # type: ignore[index]
        await asyncio.sleep(0.05)


def fast_reaper(database_url: str, **overrides: Any) -> Config:
    """A service whose reaper sweeps often, against a short heartbeat timeout."""
    settings: dict[str, Any] = {
        "heartbeat_timeout_seconds": 3.0,
        "stale_sweep_interval_seconds": 0.3,
        "heartbeat_interval_seconds": 0.3,
        "stale_sweep_margin_seconds": 0.3,
        **overrides,
    }
    return service_config(database_url, **settings)


def beats_of(*jobs: dict[str, Any]) -> queue_pb.HeartbeatRequest:
    return queue_pb.HeartbeatRequest(
        beats=[
            queue_pb.JobBeat(job_id=str(job["id"]), lease=job["lease"], stage="transcription")
            for job in jobs
        ]
    )


async def test_a_lock_held_past_the_timeout_releases_no_job_that_beats(
    database_url: str, db: Conn, locker: Conn
) -> None:
    # Issue 11, item 1: a StoreAdvert (FOR SHARE on its job) held 12 s against a 6 s timeout;
    # the other jobs' beats queued behind the locked one and the reaper released them. Here the
    # lock is held past the timeout of 3 s while every job beats each 0.3 s.
    jobs = [insert_job(db, status="RUNNING") for _ in range(3)]
    locked = jobs[0]
    async with running_queue(fast_reaper(database_url)) as qs:
        stream = qs.queue.Heartbeat()
        locker.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR SHARE", (locked["id"],))
        held_until = time.monotonic() + 4.5
        while time.monotonic() < held_until:
            await stream.write(beats_of(*jobs))
            # Answered at once: on main this waited for the lock.
            answer = await asyncio.wait_for(stream.read(), 2.0)
            assert isinstance(answer, queue_pb.HeartbeatResponse)
            assert [beat.action for beat in answer.beats] == [CONTINUE] * 3
            await asyncio.sleep(0.3)
        locker.rollback()
        for _ in range(3):  # sweeps run meanwhile, the lock gone
            await stream.write(beats_of(*jobs))
            answer = await asyncio.wait_for(stream.read(), 2.0)
            assert isinstance(answer, queue_pb.HeartbeatResponse)
            assert [beat.action for beat in answer.beats] == [CONTINUE] * 3
            await asyncio.sleep(0.3)
        await stream.done_writing()
    for job in jobs:
        row = fetch_job(db, job["id"])
        assert (row["status"], row["lease"], row["stage"]) == ("RUNNING", 1, "transcription")


async def test_a_complete_that_meets_a_lock_fails_alone_and_may_be_retried(
    database_url: str, db: Conn, locker: Conn
) -> None:
    locked, free = (insert_job(db, status="RUNNING") for _ in range(2))
    async with running_queue(service_config(database_url, lock_wait_seconds=0.5)) as qs:
        locker.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR UPDATE", (locked["id"],))
        # Sent together, so that they share a statement.
        results = await asyncio.gather(
            *(
                qs.queue.Complete(queue_pb.CompleteRequest(job_id=str(job["id"]), lease=1))
                for job in (locked, free)
            ),
            return_exceptions=True,
        )
        blocked, done = results
        assert isinstance(blocked, grpc.aio.AioRpcError), blocked
        assert blocked.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(blocked) == "ROW_LOCKED"
        assert isinstance(done, queue_pb.CompleteResponse)
        assert fetch_job(db, free["id"])["status"] == "SUCCEEDED"
        assert fetch_job(db, locked["id"])["status"] == "RUNNING"

        locker.rollback()
        await qs.queue.Complete(queue_pb.CompleteRequest(job_id=str(locked["id"]), lease=1))
    assert fetch_job(db, locked["id"])["status"] == "SUCCEEDED"


async def test_one_locked_row_fails_only_its_own_entry_of_a_batch(
    database_url: str, db: Conn, locker: Conn
) -> None:
    # Review finding 1: the whole CompleteBatch failed UNAVAILABLE ROW_LOCKED, and the worker
    # sent it again for as long as the lock lasted; no other job of it was completed.
    jobs = [insert_job(db, status="RUNNING") for _ in range(6)]
    completes, fails = jobs[:3], jobs[3:]
    # A long lock wait: a settle that waited on the lock would not be answered in this test.
    config = service_config(database_url, lock_wait_seconds=300, statement_timeout_seconds=300)
    async with running_queue(config) as qs:
        locker.execute(
            "SELECT 1 FROM ingestion_jobs WHERE id = ANY(%s) FOR SHARE",  # as a StoreAdvert does
            ([completes[1]["id"], fails[1]["id"]],),
        )
        async with asyncio.timeout(30):
            completed = await qs.queue.CompleteBatch(
                queue_pb.CompleteBatchRequest(
                    entries=[
                        queue_pb.CompleteRequest(job_id=str(job["id"]), lease=1)
                        for job in completes
                    ]
                )
            )
            failed = await qs.queue.FailBatch(
                queue_pb.FailBatchRequest(
                    entries=[
                        queue_pb.FailRequest(
                            job_id=str(job["id"]), lease=1, error_code="E", retryable=False
                        )
                        for job in fails
                    ]
                )
            )
        ok, locked = queue_pb.OUTCOME_OK, queue_pb.OUTCOME_LOCKED
        assert [(r.job_id, r.outcome) for r in completed.results] == [
            (str(completes[0]["id"]), ok),
            (str(completes[1]["id"]), locked),
            (str(completes[2]["id"]), ok),
        ]
        assert [r.outcome for r in failed.results] == [ok, locked, ok]
        assert completed.results[1].status == job_pb2.JOB_STATUS_RUNNING
        statuses = [fetch_job(db, job["id"])["status"] for job in jobs]
        assert statuses == ["SUCCEEDED", "RUNNING", "SUCCEEDED", "FAILED", "RUNNING", "FAILED"]

        # Sent again once the lock is gone, the entry settles like any other.
        locker.rollback()
        again = await qs.queue.CompleteBatch(
            queue_pb.CompleteBatchRequest(
                entries=[queue_pb.CompleteRequest(job_id=str(completes[1]["id"]), lease=1)]
            )
        )
        assert [r.outcome for r in again.results] == [ok]
    assert fetch_job(db, completes[1]["id"])["status"] == "SUCCEEDED"


def complete_in_sql(database_url: str, job: dict[str, Any], wait_ms: int) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "SELECT set_config('jobqueue.settle_lock_wait_ms', %s, false)", (str(wait_ms),)
        )
        row = conn.execute(
            "SELECT outcome FROM complete_job(%s::uuid[], %s::bigint[], %s::jsonb[])",
            ([job["id"]], [job["lease"]], ["{}"]),
        ).fetchone()
    assert row is not None
    return str(row[0])


async def test_a_settle_waits_a_moment_for_a_lock_then_answers_locked(
    database_url: str, db: Conn, locker: Conn
) -> None:
    # A row held for a moment (a concurrent claim's scan, a heartbeat's statement) is waited
    # for: the entry settles. One held for longer than the short wait is answered 'locked'.
    held, briefly = (insert_job(db, status="RUNNING") for _ in range(2))
    locker.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR SHARE", (held["id"],))
    assert complete_in_sql(database_url, held, wait_ms=50) == "locked"
    locker.rollback()

    locker.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR SHARE", (briefly["id"],))
    waiting = asyncio.create_task(asyncio.to_thread(complete_in_sql, database_url, briefly, 30_000))
    async with asyncio.timeout(20):
        await until_waiting_on_locks(db, 1)
    assert not waiting.done()
    locker.rollback()  # the lock ends while the settle waits
    assert await waiting == "ok"
    assert fetch_job(db, briefly["id"])["status"] == "SUCCEEDED"
    assert fetch_job(db, held["id"])["status"] == "RUNNING"


async def test_locked_settles_do_not_stall_an_unlocked_one(
    database_url: str, db: Conn, locker: Conn
) -> None:
    # Review finding 5: Completes of locked rows, retried one by one inside their batches'
    # flights (each waiting out the lock), took every flight of the coalescer, and a Complete
    # of an unlocked job waited behind them. Now a locked row is skipped, never waited for:
    # its caller hears ROW_LOCKED while the lock is still held, and nothing waits behind it.
    locked = [insert_job(db, status="RUNNING") for _ in range(12)]
    free = insert_job(db, status="RUNNING")
    config = service_config(database_url, lock_wait_seconds=300, statement_timeout_seconds=300)
    async with running_queue(config) as qs:
        locker.execute(
            "SELECT 1 FROM ingestion_jobs WHERE id = ANY(%s) FOR UPDATE",
            ([job["id"] for job in locked],),
        )
        calls = []
        for index, job in enumerate(locked):
            request_id, lease = str(job["id"]), 1
            if index % 3 == 0:
                call = qs.queue.Complete(queue_pb.CompleteRequest(job_id=request_id, lease=lease))
            elif index % 3 == 1:
                call = qs.queue.Fail(
                    queue_pb.FailRequest(job_id=request_id, lease=lease, error_code="E")
                )
            else:
                call = qs.queue.Release(queue_pb.ReleaseRequest(job_id=request_id, lease=lease))
            calls.append(asyncio.ensure_future(call))
        async with asyncio.timeout(30):  # the lock is held for the whole test
            done = await qs.queue.Complete(
                queue_pb.CompleteRequest(job_id=str(free["id"]), lease=1)
            )
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert done.job.status == job_pb2.JOB_STATUS_SUCCEEDED
        for outcome in outcomes:
            assert isinstance(outcome, grpc.aio.AioRpcError), outcome
            assert outcome.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(outcome) == "ROW_LOCKED"
        assert {fetch_job(db, job["id"])["status"] for job in locked} == {"RUNNING"}
    assert fetch_job(db, free["id"])["status"] == "SUCCEEDED"


async def test_a_statement_past_its_timeout_fails_its_call_not_the_service(
    database_url: str, db: Conn, locker: Conn
) -> None:
    slow, other = (insert_job(db, status="RUNNING") for _ in range(2))
    config = service_config(database_url, lock_wait_seconds=5.0, statement_timeout_seconds=0.5)
    async with running_queue(config) as qs:
        # Settles skip a locked row (settle.sql), so the statement is made to wait on the table.
        locker.execute("LOCK TABLE ingestion_jobs IN EXCLUSIVE MODE")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await qs.queue.Fail(
                queue_pb.FailRequest(job_id=str(slow["id"]), lease=1, error_code="E"), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(caught.value) == "DATABASE_BUSY"
        locker.rollback()
        # The service goes on: the next call is answered.
        await qs.queue.Complete(queue_pb.CompleteRequest(job_id=str(other["id"]), lease=1))
    assert fetch_job(db, other["id"])["status"] == "SUCCEEDED"
    assert fetch_job(db, slow["id"])["status"] == "RUNNING"


async def test_cancels_stuck_on_a_lock_do_not_starve_claims_stats_or_health(
    database_url: str, db: Conn, locker: Conn
) -> None:
    # Issue 11, item 2: twelve CancelJobs waiting on a locked row took the one shared pool, and
    # Claim, GetQueueStats and health failed.
    locked = insert_job(db, status="RUNNING")
    queued = insert_job(db, queue="media")
    async with running_queue(service_config(database_url)) as qs:
        locker.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR UPDATE", (locked["id"],))
        cancels = [
            asyncio.ensure_future(
                qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id=str(locked["id"])))
            )
            for _ in range(12)
        ]
        await until_waiting_on_locks(db, 2)

        stats = await qs.admin.GetQueueStats(admin_pb.GetQueueStatsRequest(), timeout=2)
        assert stats.by_status["RUNNING"] == 1
        claimed = await qs.queue.Claim(
            queue_pb.ClaimRequest(worker_id="w", max_jobs=1, queue="media"), timeout=2
        )
        assert [job.id for job in claimed.jobs] == [str(queued["id"])]
        await qs.service._set_health(await qs.service._database_ok())
        health = health_pb2_grpc.HealthStub(qs.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

        # Each cancel ends on its own, as a retryable error: none waits for ever.
        outcomes = await asyncio.gather(*cancels, return_exceptions=True)
        assert all(isinstance(outcome, grpc.aio.AioRpcError) for outcome in outcomes)
        assert {outcome.code() for outcome in outcomes} == {grpc.StatusCode.UNAVAILABLE}  # type: ignore[union-attr]
        locker.rollback()
        response = await qs.admin.CancelJob(admin_pb.CancelJobRequest(job_id=str(locked["id"])))
        assert response.cancellation_pending


# -- the stale sweep after an outage --------------------------------------------------------------


async def beat_forever(qs: RunningQueue, job: dict[str, Any], interval: float) -> None:
    """What a worker does: beat every interval; when the stream breaks, reopen it with capped
    backoff and beat again at once."""
    delay = 0.1
    while True:
        call = qs.queue.Heartbeat()
        try:
            while True:
                await call.write(beats_of(job))
                if await call.read() is grpc.aio.EOF:
                    break
                delay = 0.1
                await asyncio.sleep(interval)
        except grpc.aio.AioRpcError:
            pass
        finally:
            call.cancel()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


@pytest.mark.slow
async def test_a_cut_longer_than_the_timeout_releases_no_job_that_beats(
    database_url: str, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 11, item 6: after a 12 s cut (timeout 6 s) a beating job was released 1.8 s after
    # the database came back: its beats were lost in the outage, and the sweep ran first.
    monkeypatch.setattr("queue_service.server.HEALTH_CHECK_INTERVAL_SECONDS", 0.2)
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    beaten = insert_job(db, status="RUNNING")
    config = fast_reaper(
        proxied,
        heartbeat_timeout_seconds=6.0,
        stale_sweep_interval_seconds=0.2,
        heartbeat_interval_seconds=1.0,
        stale_sweep_margin_seconds=1.0,  # this test's client reconnects within 1 s
    )
    async with running_queue(config) as qs:
        beater = asyncio.create_task(beat_forever(qs, beaten, interval=1.0))
        try:
            await wait_until(lambda: fetch_job(db, beaten["id"])["stage"] == "transcription")
            await proxy.cut()
            await asyncio.sleep(12)  # the outage itself
            await proxy.start()
            # A job that nobody beats: the sweep releases it once it runs again.
            silent = insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 600})
            await wait_until(lambda: fetch_job(db, silent["id"])["status"] == "RETRY", 20)
            await asyncio.sleep(1.5)  # more sweeps, beats going on
        finally:
            beater.cancel()
            await asyncio.gather(beater, return_exceptions=True)
    await proxy.cut()
    row = fetch_job(db, beaten["id"])
    assert (row["status"], row["lease"], row["error_code"]) == ("RUNNING", 1, None)


async def wait_until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_a_lost_stream_releases_no_job_beaten_since_while_its_row_was_locked(
    db: Conn, locker: Conn
) -> None:
    # Both jobs' streams broke 10 s ago; one worker reconnected and beat while its row was held.
    beaten = insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 10})
    silent = insert_job(db, status="RUNNING", seconds_ago={"last_heartbeat_at": 10})
    locker.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR SHARE", (beaten["id"],))
    assert beat(db, beaten) == {beaten["id"]: "deferred"}
    locker.rollback()

    released = db.execute(
        "SELECT job_id FROM release_lost_jobs(%s::uuid[], '{1,1}', '{9,9}')",
        ([beaten["id"], silent["id"]],),
    ).fetchall()

    assert released == [(silent["id"],)]
    assert fetch_job(db, beaten["id"])["status"] == "RUNNING"
    # The lost job's history is capped like any other failure's (its entries are numbered).
    assert fetch_job(db, silent["id"])["errors"][-1]["code"] == "WORKER_LOST"
    assert "number" in fetch_job(db, silent["id"])["errors"][-1]
