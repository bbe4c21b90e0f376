"""Dead workers found in seconds, and live workers that fence themselves, with real processes:
`python -m queue_service` and `python -m worker_service` (the small test pipeline), a worker
killed -9, and a TCP proxy between a worker and the queue service that partitions them (holds
every byte, closes nothing) and heals.

- kill -9 of a worker breaks its heartbeat stream at once; the queue service releases its job a
  short grace later (STREAM_LOST_GRACE_SECONDS, 1 s), with the default heartbeat timeout (120 s)
  and sweep (30 s) far away. The figure is printed (run with -s), never asserted.
- A partition shorter than the heartbeat timeout costs nothing: the job completes under its
  first lease. A longer one: the worker stops the job itself once no beat was acknowledged for
  the timeout and never completes it, and the queue service's sweep releases it.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.jobs import fetch_job
from tests.support.processes import Process, lines_in_order
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_for
from tests.worker.conftest import Queue, at_gate, held_job

pytestmark = pytest.mark.integration

# The queue service's defaults, stated (the fixtures' QUEUE_ENV shortens them for other tests).
DEFAULT_TIMEOUTS = {"HEARTBEAT_TIMEOUT_SECONDS": "120", "STALE_SWEEP_INTERVAL_SECONDS": "30"}
DEFAULT_WORKER = {"HEARTBEAT_INTERVAL_SECONDS": "5", "HEARTBEAT_TIMEOUT_SECONDS": "120"}


def silent_seconds(db: psycopg.Connection[Any], job_id: str) -> float:
    row = db.execute(
        "SELECT extract(epoch FROM clock_timestamp() - last_heartbeat_at)::float8 "
        "FROM ingestion_jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return float(row[0])


@contextmanager
def proxy_to(port: int) -> Iterator[tuple[TcpProxy, Callable[[Callable[[], None]], None]]]:
    """A TcpProxy to the queue service, on an event loop of its own thread; yields it and a way
    to call its methods on that loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = TcpProxy("127.0.0.1", port)
    asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)

    def call(method: Callable[[], None]) -> None:
        loop.call_soon_threadsafe(method)

    try:
        yield proxy, call
    finally:
        call(proxy.heal)
        asyncio.run_coroutine_threadsafe(proxy.cut(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_killed_worker_s_job_is_claimable_again_within_seconds_by_default(
    queue_factory: Callable[..., Queue],
    worker_factory: Callable[..., Process],
    objects: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    queue = queue_factory(**DEFAULT_TIMEOUTS)
    rounds = 3
    runnable_after: list[float] = []
    claimed_after: list[float] = []
    for round_ in range(rounds):
        gate = tmp_path / f"gate-{round_}"
        job_id = held_job(queue, objects, gate, key=f"videos/held-{round_}.mp4")
        victim = worker_factory(queue, "--limit", "1", name=f"victim-{round_}", **DEFAULT_WORKER)
        wait_for(lambda: at_gate(db, job_id), what="the job held by the victim")  # noqa: B023
        # Started once the job is taken, so that it waits (a long-polling Claim) for the job the
        # victim leaves behind.
        rescuer = worker_factory(
            queue, "--limit", "1", name=f"rescuer-{round_}", WORKER_ID="rescuer", **DEFAULT_WORKER
        )
        rescuer.wait_for_line(r"Worker ready - starting poll loop")

        killed_at = time.monotonic()
        victim.signal(signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL

        def released(job_id: str = job_id) -> bool:
            return fetch_job(db, job_id)["status"] != "RUNNING" or at_gate(db, job_id, lease=2)

        wait_for(released, timeout=20, interval=0.01, what="the killed worker's job released")
        runnable_after.append(time.monotonic() - killed_at)
        wait_for(
            lambda: fetch_job(db, job_id)["lease"] == 2,  # noqa: B023
            timeout=20,
            interval=0.01,
            what="the job claimed again",
        )
        claimed_after.append(time.monotonic() - killed_at)
        gate.touch()
        assert rescuer.wait() == 0, rescuer.output
        row = fetch_job(db, job_id)
        assert (row["status"], row["attempts"], row["locked_by"]) == ("SUCCEEDED", 2, "rescuer")
        assert [entry["code"] for entry in row["errors"]] == ["WORKER_LOST"]
    print(
        f"\nkill -9 -> runnable again: {_figures(runnable_after)}; "
        f"-> claimed by a waiting worker: {_figures(claimed_after)} (default settings)"
    )


def _figures(seconds: list[float]) -> str:
    return (
        f"median {statistics.median(seconds):.2f}s "
        f"(min {min(seconds):.2f}s, max {max(seconds):.2f}s, {len(seconds)} runs)"
    )


def test_a_short_partition_releases_nothing_and_the_job_completes(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    results: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    gate = tmp_path / "gate"
    job_id = held_job(queue, objects, gate)
    with proxy_to(queue.port) as (proxy, call):
        worker = worker_factory(None, "--limit", "1", QUEUE_ADDR=f"127.0.0.1:{proxy.port}")
        wait_for(lambda: at_gate(db, job_id), what="the job running")

        call(proxy.partition)
        # Its beats stop arriving: a third of the heartbeat timeout (3 s) without one.
        wait_for(lambda: silent_seconds(db, job_id) > 1.0, what="a second without heartbeats")
        gate.touch()  # it finishes during the partition: its Complete waits in the proxy
        call(proxy.heal)

        assert worker.wait() == 0, worker.output
    row = fetch_job(db, job_id)
    assert (row["status"], row["attempts"], row["lease"], row["errors"]) == (
        "SUCCEEDED",
        1,
        1,
        [],
    )
    assert sorted(p.name for p in results.iterdir()) == [f"{job_id}.1.json"]
    assert "no heartbeat acknowledged" not in worker.output


def test_a_long_partition_stops_the_job_on_the_worker_and_releases_it_on_the_service(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    results: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    gate = tmp_path / "gate"
    job_id = held_job(queue, objects, gate)
    with proxy_to(queue.port) as (proxy, call):
        worker = worker_factory(None, "--limit", "1", QUEUE_ADDR=f"127.0.0.1:{proxy.port}")
        wait_for(lambda: at_gate(db, job_id), what="the job running")

        call(proxy.partition)
        # The worker stops the job itself once no beat was acknowledged for the timeout (3 s)...
        worker.wait_for_line(
            rf"Job {job_id[:8]} stopped after .*: no heartbeat acknowledged for 3\.\d+s "
            r"\(the queue service releases it\); not completing it",
            timeout=20,
        )
        # ... and the queue service, which heard nothing either, releases it.
        wait_for(lambda: fetch_job(db, job_id)["status"] == "RETRY", what="the job released")
        gate.touch()  # had the job run on, it would finish now
        call(proxy.heal)

        assert worker.wait() == 0, worker.output
    row = fetch_job(db, job_id)
    assert (row["status"], row["attempts"], row["lease"]) == ("RETRY", 1, 1)
    assert [entry["code"] for entry in row["errors"]] == ["HEARTBEAT_TIMEOUT"]
    # No stage ran after the stop: the last stage (persist) never wrote its record.
    assert not results.exists() or not list(results.iterdir())
    lines_in_order(worker, [r"Jobs processed: 1", r"Jobs succeeded: 0", r"Jobs failed: 1"])
