"""The queue service stopped under load, by kill -9 or SIGTERM, and started again on the same
port while workers keep running: their Completes are retried under their leases, their
heartbeat streams reopen, and nothing is lost or done twice. The recovery time is how long the
service took to answer again once it listened."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.harness import FaultRun, assert_clean
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

JOBS = 400


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_the_queue_service_stopped_under_load_loses_nothing(
    run: FaultRun, sig: signal.Signals
) -> None:
    run.worker_env["FAULT_HOLD_SECONDS"] = "0.3"
    run.start_service()
    for slot in ("a", "b", "c"):
        run.start_worker(slot, "--concurrency", "4", linked=True)
    run.enqueue(JOBS)
    wait_for(
        lambda: run.counts().get("SUCCEEDED", 0) >= JOBS // 4,
        what="a quarter of the jobs done",
        interval=0.05,
    )

    with run.probing():
        started_at = time.time()
        code = run.stop_service(sig)
        run.start_service()
        run.outage(f"queue service {sig.name}", started_at, time.time())
        run.wait_until_settled(timeout=120)

    report = run.report()
    run.record(f"queue service {sig.name} under load, restarted", report)
    assert_clean(report)
    assert report.by_status == {"SUCCEEDED": JOBS}
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    # Every worker rode it out.
    dead = set(run.workers) - run.live_workers()
    assert not dead, "\n\n".join(run.workers[worker].output for worker in dead)
    assert report.recoveries[f"queue service {sig.name}"] is not None
