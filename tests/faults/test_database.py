"""PostgreSQL going away under load: a fast and an immediate restart, and a 20 s outage, on a
throwaway cluster of the test's own (tests/support/pg_cluster.py; the shared cluster is never
touched). Nothing may be lost or done twice; a job whose worker kept beating through the outage
must not be released for the silence the outage caused; and the figures say how long the queue
service took to answer again once PostgreSQL was back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultRun, assert_clean, fault_run
from tests.support.background_loop import BackgroundLoop
from tests.support.pg_cluster import Cluster, ShutdownMode, throwaway_cluster
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

JOBS = 300
OUTAGE_SECONDS = 20.0
JOBS_IN_HAND = 8


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster() as made:
        yield made


@pytest.fixture
def own_run(cluster: Cluster, tmp_path: Path, loop: BackgroundLoop) -> Iterator[FaultRun]:
    """A fault run whose queue service uses the throwaway cluster (it migrates it as it starts)."""
    with fault_run(cluster.url(), tmp_path, loop) as started:
        yield started


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_postgres_restart_under_load_loses_nothing(
    own_run: FaultRun, cluster: Cluster, mode: ShutdownMode
) -> None:
    run = own_run
    run.worker_env["FAULT_HOLD_SECONDS"] = "0.3"
    run.start_service()
    for slot in ("a", "b", "c"):
        run.start_worker(slot, "--concurrency", "4")
    run.enqueue(JOBS)
    wait_for(
        lambda: run.counts().get("SUCCEEDED", 0) >= JOBS // 4,
        what="a quarter of the jobs done",
        interval=0.05,
    )

    with run.probing():
        started_at = time.time()
        cluster.stop(mode)
        cluster.start()
        run.outage(f"PostgreSQL {mode} restart", started_at, time.time())
        run.wait_until_settled(timeout=120)

    report = run.report()
    run.record(f"PostgreSQL {mode} restart under load", report)
    assert_clean(report)
    assert report.by_status == {"SUCCEEDED": JOBS}
    assert len(run.live_workers()) == 3
    assert report.recoveries[f"PostgreSQL {mode} restart"] is not None


def twenty_second_outage(run: FaultRun, cluster: Cluster) -> None:
    """Eight jobs in hand on two workers, beating every 2 s against a 6 s timeout (issue 11's
    own reproduction used 6 s), while PostgreSQL is down for 20 s."""
    run.service_env["HEARTBEAT_TIMEOUT_SECONDS"] = "6"
    run.worker_env["HEARTBEAT_TIMEOUT_SECONDS"] = "6"
    run.worker_env["HEARTBEAT_INTERVAL_SECONDS"] = "2"
    # Each job outlasts the outage: its worker is alive and beating all along.
    run.worker_env["FAULT_HOLD_SECONDS"] = str(OUTAGE_SECONDS + 6)
    run.worker_env["FAULT_REHOLD_SECONDS"] = "0.2"
    run.start_service()
    for slot in ("a", "b"):
        run.start_worker(slot, "--concurrency", "4")
    run.enqueue(JOBS_IN_HAND)
    wait_for(lambda: run.running_jobs() == JOBS_IN_HAND, what="every job in hand")

    with run.probing():
        started_at = time.time()
        cluster.stop("fast")
        # The outage itself: PostgreSQL stays down this long while the workers carry on.
        time.sleep(OUTAGE_SECONDS)
        cluster.start()
        back_at = time.time()
        run.outage("PostgreSQL down 20 s", started_at, back_at)
        run.wait_until_settled(timeout=90)


def test_a_20_s_postgres_outage_loses_nothing_and_takes_no_live_job_away(
    own_run: FaultRun, cluster: Cluster
) -> None:
    run = own_run
    twenty_second_outage(run, cluster)

    report = run.report()
    run.record("PostgreSQL down 20 s (timeout 6 s)", report)
    assert_clean(report)
    assert report.by_status == {"SUCCEEDED": JOBS_IN_HAND}
    assert report.recoveries["PostgreSQL down 20 s"] is not None
    # A job may be released after the outage only if its worker had given it up (a worker
    # that heard no acknowledgement for the heartbeat timeout stops the job, issue 11 item 6):
    # none may be taken from a worker still running it, and so run twice. (Before the stale
    # sweep waited out the service's own outages, 6 of 8 were, in one run of three.)
    assert report.extra_runs == 0, report.rerun_jobs
