"""One job's trouble must stay its own: an operator's open transaction holding one job's row
(a psql session, a slow advert write) must not stall every other job's heartbeats until the
reaper takes their healthy jobs away (issue 11 item 1)."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.faults.harness import HEARTBEAT_TIMEOUT_SECONDS, FaultRun, assert_clean
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

JOBS = 4


def test_one_locked_job_row_takes_no_other_job_away(run: FaultRun) -> None:
    # Every job outlasts the lock: four jobs on two workers, beating every 0.3 s.
    run.worker_env["FAULT_HOLD_SECONDS"] = str(4 * HEARTBEAT_TIMEOUT_SECONDS)
    run.worker_env["FAULT_REHOLD_SECONDS"] = "0.2"
    run.start_service()
    for slot in ("a", "b"):
        run.start_worker(slot, "--concurrency", "2")
    locked, *others = run.enqueue(JOBS)
    wait_for(lambda: run.running_jobs() == JOBS, what="every job in hand")

    # An operator's transaction holds the row for twice the heartbeat timeout.
    with psycopg.connect(run.database_url) as operator:
        operator.execute("SELECT 1 FROM ingestion_jobs WHERE id = %s FOR UPDATE", (locked,))
        started_at = time.time()
        # The fault itself: the lock is held this long while everything else carries on.
        time.sleep(2 * HEARTBEAT_TIMEOUT_SECONDS)
        operator.rollback()
    run.outage("one job row locked", started_at, time.time())
    run.wait_until_settled(timeout=60)

    report = run.report()
    run.record("one job row locked for 6 s (timeout 3 s)", report)
    assert_clean(report)
    assert report.by_status == {"SUCCEEDED": JOBS}
    taken = sorted(span.job_id for span in report.service_releases if span.job_id in others)
    assert taken == [], f"{len(taken)} of the {len(others)} unlocked jobs were released"
