"""Workers that die or freeze: kill -9 storms, a kill under the default settings, SIGSTOP past
the heartbeat timeout. Every run is judged by the history checker (tests/faults/history.py):
nothing lost, nothing completed twice, no stale write accepted."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.harness import FaultRun, assert_clean, released_from_live_workers
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

# The storm's size: 10 workers and 2,000 jobs by default; FAULT_STORM_JOBS makes it smaller
# (or larger) where a run must be shorter.
STORM_JOBS = int(os.environ.get("FAULT_STORM_JOBS", "2000"))
STORM_WORKERS = 10
STORM_KILL_EVERY_SECONDS = 3.0


def test_a_kill_9_storm_loses_nothing_and_completes_nothing_twice(run: FaultRun) -> None:
    # Jobs of 1 s each, 4 at a time per worker: with a worker killed (and restarted) every 3 s,
    # some are always in hand, claimed ahead, or between their stages and their Complete.
    run.worker_env["FAULT_HOLD_SECONDS"] = "1.0"
    run.worker_env["FAULT_ADVERT"] = "1"
    run.start_service()
    slots = [f"w{n}" for n in range(STORM_WORKERS)]
    current = {slot: run.start_worker(slot, "--concurrency", "4") for slot in slots}
    run.enqueue(STORM_JOBS, prefix="storm")

    kills = 0
    next_kill = time.monotonic() + STORM_KILL_EVERY_SECONDS
    deadline = time.monotonic() + 240
    while not run.settled():
        assert time.monotonic() < deadline, f"storm did not drain: {run.counts()}"
        if time.monotonic() >= next_kill:
            slot = slots[kills % len(slots)]
            run.kill_worker(current[slot])
            current[slot] = run.start_worker(slot, "--concurrency", "4")
            kills += 1
            next_kill += STORM_KILL_EVERY_SECONDS
        time.sleep(0.1)

    report = run.report()
    run.record(f"kill -9 storm ({STORM_WORKERS} workers, {STORM_JOBS} jobs, {kills} kills)", report)
    assert_clean(report)
    assert report.by_status == {"SUCCEEDED": STORM_JOBS}
    assert kills >= 3
    # The kills did strike jobs in hand, and every one of them was run again to completion.
    assert report.detections
    assert all(d.reclaimed_after is not None for d in report.detections)
    # Only the killed workers' jobs were released: the survivors kept theirs.
    assert released_from_live_workers(report, run.faults) == []


def test_a_killed_worker_s_job_is_runnable_again_in_seconds_with_default_settings(
    run: FaultRun,
) -> None:
    # The queue service's own defaults: HEARTBEAT_TIMEOUT_SECONDS 120, a sweep every 30 s.
    for name in ("HEARTBEAT_TIMEOUT_SECONDS", "STALE_SWEEP_INTERVAL_SECONDS"):
        run.service_env.pop(name)
        run.worker_env.pop(name, None)
    run.worker_env["HEARTBEAT_INTERVAL_SECONDS"] = "5"
    run.worker_env["FAULT_HOLD_SECONDS"] = "60"
    run.start_service()
    victim = run.start_worker("victim")
    [job_id] = run.enqueue(1)
    wait_for(lambda: run.running_jobs(victim) == 1, what="the victim holding the job")
    wait_for(lambda: run.recorder and any(w.kind == "heartbeat" for w in run.recorder.writes))

    run.kill_worker(victim)
    run.worker_env["FAULT_HOLD_SECONDS"] = "0.1"
    rescuer = run.start_worker("rescuer")

    # Far sooner than the 120 s timeout: issue 11 asks for <= 3 s; the figure is reported.
    try:
        wait_for(run.settled, timeout=15, what="the job re-claimed and completed")
    finally:
        report = run.report()
        run.record("kill -9, default settings", report)
    assert_clean(report)
    assert report.by_status == {"SUCCEEDED": 1}
    assert run.history().final[job_id].locked_by == rescuer


def test_a_worker_paused_past_the_heartbeat_timeout_cannot_finish_its_old_lease(
    run: FaultRun,
) -> None:
    run.worker_env["FAULT_HOLD_SECONDS"] = "1.5"
    run.worker_env["FAULT_ADVERT"] = "1"
    run.start_service()
    sleeper = run.start_worker("sleeper")
    [job_id] = run.enqueue(1)
    wait_for(lambda: run.running_jobs(sleeper) == 1, what="the sleeper holding the job")

    fault = run.kill_worker(sleeper, signal.SIGSTOP)
    # Its job is released after the timeout and done by another worker meanwhile.
    other = run.start_worker("other")
    wait_for(run.settled, timeout=30, what="the job completed by the other worker")
    assert run.workers[other].stop() == 0
    run.workers[sleeper].signal(signal.SIGCONT)
    # Whatever the woken worker does with its old lease (a beat, an advert, a Complete), the
    # queue service refuses it; and it is healthy: the next jobs are its alone to do.
    more = run.enqueue(4, prefix="after")
    wait_for(run.settled, timeout=30, what="the jobs enqueued after the pause")

    report = run.report()
    run.record("SIGSTOP past the heartbeat timeout, then SIGCONT", report)
    assert_clean(report)
    assert report.by_status == {"SUCCEEDED": 5}
    assert run.history().final[job_id].lease == 2
    assert run.history().final[job_id].locked_by == other
    final = run.history().final
    assert {final[job].locked_by for job in more} == {sleeper}
    assert fault.victims == {sleeper}
    [detection] = report.detections
    assert detection.released_after is not None
