"""The heartbeat stream's own rules, beyond each beat's transition (test_state_machine.py): a
stream that breaks releases the jobs beaten alive on it after a short grace unless something
beats them again (queue_service/orphans.py, migrations/010_worker_lost.sql); a stream the client
closes, or the service ends at its shutdown, releases nothing; a client that writes without
reading its answers is held back, not buffered."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import grpc
import psycopg
import pytest

from jobqueue.v1 import queue_service_pb2 as queue_pb
from jobqueue.v1 import queue_service_pb2_grpc
from queue_service.orphans import Orphans
from tests.support.grpc_server import RunningQueue, running_queue, service_config
from tests.support.jobs import fetch_job, insert_job
from tests.support.processes import queue_service_process
from worker_service.client import QueueClient
from worker_service.config import WorkerConfig
from worker_service.heartbeats import RECONNECT_INITIAL_SECONDS, HeartbeatStream

pytestmark = pytest.mark.integration

GRACE = 0.3


async def until(check: Callable[[], Any], what: str) -> Any:
    """Poll `check` until it holds (15 s at most)."""
    try:
        async with asyncio.timeout(15):
            while not (value := check()):
                await asyncio.sleep(0.02)
            return value
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def single(row: dict[str, Any], **fields: Any) -> queue_pb.HeartbeatRequest:
    return queue_pb.HeartbeatRequest(job_id=str(row["id"]), lease=row["lease"], **fields)


async def beaten(call: Any, *rows: dict[str, Any], lease_offset: int = 0) -> list[int]:
    """Beat each job on the open stream; their actions."""
    actions = []
    for row in rows:
        await call.write(
            queue_pb.HeartbeatRequest(job_id=str(row["id"]), lease=row["lease"] + lease_offset)
        )
        actions.append((await call.read()).action)
    return actions


@pytest.fixture
async def qs_grace(database_url: str) -> Any:
    config = service_config(database_url, stream_lost_grace_seconds=GRACE)
    async with running_queue(config) as running:
        yield running


def orphans(qs: RunningQueue) -> Orphans:
    return qs.service.queue.orphans


async def test_a_broken_stream_releases_its_live_jobs_after_the_grace(
    qs_grace: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    qs = qs_grace
    alive = insert_job(db, status="RUNNING", locked_by="w-dead")
    last_attempt = insert_job(db, status="RUNNING", attempts=5, max_attempts=5)
    cancelling = insert_job(db, status="RUNNING", seconds_ago={"cancel_requested_at": 0})
    settled = insert_job(db, status="RUNNING")
    call = qs.queue.Heartbeat()
    assert await beaten(call, alive, last_attempt, cancelling, settled) == [
        queue_pb.HEARTBEAT_ACTION_CONTINUE,
        queue_pb.HEARTBEAT_ACTION_CONTINUE,
        queue_pb.HEARTBEAT_ACTION_CANCEL,
        queue_pb.HEARTBEAT_ACTION_CONTINUE,
    ]
    # A beat under a lease that is not current does not make its job this stream's.
    stranger = insert_job(db, status="RUNNING", lease=7)
    assert await beaten(call, stranger, lease_offset=-1) == [queue_pb.HEARTBEAT_ACTION_LEASE_LOST]
    await qs.queue.Complete(queue_pb.CompleteRequest(job_id=str(settled["id"]), lease=1))

    call.cancel()  # the worker died: its stream broke without a half-close

    await until(lambda: orphans(qs).checked >= 4, "the broken stream's jobs to be looked at")
    row = fetch_job(db, alive["id"])
    assert (row["status"], row["error_code"], row["stage"], row["attempts"]) == (
        "RETRY",
        "WORKER_LOST",
        "released_stale",
        1,
    )
    assert row["last_error"].startswith("worker lost: its heartbeat stream ended 0.")
    assert row["last_error"].endswith("(locked by w-dead)")
    assert [entry["code"] for entry in row["errors"]] == ["WORKER_LOST"]
    assert fetch_job(db, last_attempt["id"])["status"] == "FAILED"
    assert fetch_job(db, cancelling["id"])["status"] == "CANCELLED"
    assert fetch_job(db, settled["id"])["status"] == "SUCCEEDED"
    assert fetch_job(db, stranger["id"])["status"] == "RUNNING"
    assert orphans(qs).released == 3
    # Runnable at once: the next claim takes it.
    claimed = await qs.queue.Claim(queue_pb.ClaimRequest(worker_id="w2", max_jobs=5))
    assert [job.id for job in claimed.jobs] == [str(alive["id"])]


async def test_a_job_beaten_again_after_its_stream_broke_is_left_running(
    qs_grace: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # The worker lost its connection, not its life: it reconnects (here, to the same service;
    # the check is the database's last_heartbeat_at, so any replica would do) and beats again.
    qs = qs_grace
    job = insert_job(db, status="RUNNING")
    first = qs.queue.Heartbeat()
    assert await beaten(first, job) == [queue_pb.HEARTBEAT_ACTION_CONTINUE]
    first.cancel()
    # As the worker does: it reopens its stream after its first reconnect delay. (A beat on the
    # new stream within a few milliseconds of the old one's last could not be told from it: the
    # rule compares the service's clock, mapped onto the database's, with last_heartbeat_at.)
    await asyncio.sleep(RECONNECT_INITIAL_SECONDS)
    second = qs.queue.Heartbeat()
    assert await beaten(second, job) == [queue_pb.HEARTBEAT_ACTION_CONTINUE]

    await until(lambda: orphans(qs).checked >= 1, "the broken stream's job to be looked at")
    assert orphans(qs).released == 0
    assert fetch_job(db, job["id"])["status"] == "RUNNING"
    await second.done_writing()


async def test_a_stream_the_worker_closes_releases_nothing(
    qs_grace: RunningQueue, db: psycopg.Connection[Any]
) -> None:
    # grpcurl sends its beat and half-closes; a worker leaving closes its stream the same way.
    qs = qs_grace
    closed, broken = insert_job(db, status="RUNNING"), insert_job(db, status="RUNNING")
    call = qs.queue.Heartbeat()
    assert await beaten(call, closed) == [queue_pb.HEARTBEAT_ACTION_CONTINUE]
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    other = qs.queue.Heartbeat()
    assert await beaten(other, broken) == [queue_pb.HEARTBEAT_ACTION_CONTINUE]
    other.cancel()

    await until(lambda: orphans(qs).checked >= 1, "the broken stream's job to be looked at")
    assert fetch_job(db, broken["id"])["status"] == "RETRY"
    assert fetch_job(db, closed["id"])["status"] == "RUNNING"
    assert orphans(qs).checked == 1


async def test_streams_ended_by_the_service_s_shutdown_release_nothing(
    qs_grace: RunningQueue, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    qs = qs_grace
    lost: list[object] = []
    monkeypatch.setattr(orphans(qs), "stream_lost", lambda jobs, writes: lost.append(jobs))
    job = insert_job(db, status="RUNNING")
    call = qs.queue.Heartbeat()
    assert await beaten(call, job) == [queue_pb.HEARTBEAT_ACTION_CONTINUE]
    # Proof that the recorder hears a broken stream ...
    broken = qs.queue.Heartbeat()
    assert await beaten(broken, job) == [queue_pb.HEARTBEAT_ACTION_CONTINUE]
    broken.cancel()
    await until(lambda: lost, "the broken stream to be reported")
    lost.clear()

    await qs.service.stop(grace=1)

    # ... and that the shutdown, which ended the other stream, reported nothing.
    assert await call.read() == grpc.aio.EOF
    assert lost == []
    assert fetch_job(db, job["id"])["status"] == "RUNNING"


# -- flow control ------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRss:
    """The highest RSS of a process, sampled every 10 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        with contextlib.suppress(OSError, AssertionError):  # the process is gone
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, rss_bytes(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


async def test_a_client_that_writes_beats_without_reading_is_held_back(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    # 300k beats written without reading a single answer once grew the service by 100 MiB (its
    # answers queued without bound). Now the service stops reading the stream while 10,000
    # beats await their answers, and gRPC's flow control holds the client back.
    job = insert_job(db, status="RUNNING")
    messages, per_message = 3_000, 100
    request = queue_pb.HeartbeatRequest()
    for _ in range(per_message):
        request.beats.add(job_id=str(job["id"]), lease=1, stage="s", progress=0.5)
    with queue_service_process(database_url) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            call = queue_service_pb2_grpc.QueueServiceStub(channel).Heartbeat()
            await call.write(request)  # warm up: one answered message
            assert len((await call.read()).beats) == per_message
            baseline = rss_bytes(service.popen.pid)
            peak = PeakRss(service.popen.pid)

            async def write_all() -> None:
                for _ in range(messages):
                    await call.write(request)
                await call.done_writing()

            writer = asyncio.create_task(write_all())
            # The structural proof: the service paused its reading (it says so once a stream).
            await asyncio.to_thread(service.wait_for_line, r"reading paused", 120)
            assert not writer.done()
            # Now read: everything written is answered, nothing was lost on the way.
            answered = 0
            while (response := await call.read()) != grpc.aio.EOF:
                answered += len(response.beats)
            await writer
            growth = peak.stop() - baseline
    print(
        f"\nservice RSS: baseline {baseline / 2**20:.1f} MiB, peak growth {growth / 2**20:.1f} MiB"
    )
    assert answered == messages * per_message
    assert growth < 40 * 2**20, f"the service grew by {growth / 2**20:.1f} MiB"


async def test_a_worker_that_stops_closes_its_stream_and_releases_nothing(
    qs_grace: RunningQueue, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's own stream (worker_service/heartbeats.py) through the real client: stopping
    # it half-closes the stream, which the service does not take for a dead worker's.
    qs = qs_grace
    lost: list[object] = []
    monkeypatch.setattr(orphans(qs), "stream_lost", lambda jobs, writes: lost.append(jobs))
    job = insert_job(db, status="RUNNING")
    client = QueueClient(WorkerConfig(queue_addr=qs.target, worker_id="w"))
    stream = HeartbeatStream(client, 0.05, "w", 5.0)
    stream.start()
    try:
        entry = stream.register(str(job["id"]), 1, lambda _action: None)
        before = fetch_job(db, job["id"])["last_heartbeat_at"]
        await until(lambda: entry.acked > 0 and not entry.in_flight, "a beat acknowledged")
        await until(
            lambda: fetch_job(db, job["id"])["last_heartbeat_at"] != before, "a beat written"
        )
    finally:
        await stream.stop()
        await client.close()
    assert lost == []
    assert fetch_job(db, job["id"])["status"] == "RUNNING"
