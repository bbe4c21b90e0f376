"""The network between a worker and the queue service: a partition shorter than the heartbeat
timeout (nothing may be released), one longer (the job is released and done elsewhere, and
the cut-off worker stops it by itself), and a Complete whose answer is lost (retried, counted
once). The worker's link is a TCP proxy that holds every byte while paused, as a network that
drops packets does, without breaking a connection."""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import (
    HEARTBEAT_TIMEOUT_SECONDS,
    FaultRun,
    assert_clean,
    released_from_live_workers,
)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]


def partition(run: FaultRun, slot: str, seconds: float) -> tuple[float, float]:
    """Pause the slot's link for `seconds` (the outage this scenario is about); returns when
    it began and ended."""
    link = run.links[slot]
    started_at = time.time()
    run.loop.loop.call_soon_threadsafe(link.partition)
    try:
        time.sleep(seconds)
    finally:
        run.loop.loop.call_soon_threadsafe(link.heal)
    return started_at, time.time()


def test_a_partition_shorter_than_the_heartbeat_timeout_releases_nothing(run: FaultRun) -> None:
    run.worker_env["FAULT_HOLD_SECONDS"] = "3"
    run.start_service()
    run.start_worker("cut", "--concurrency", "2", linked=True)
    run.enqueue(4)
    wait_for(lambda: run.running_jobs() == 2, what="two jobs in hand")

    started_at, ended_at = partition(run, "cut", HEARTBEAT_TIMEOUT_SECONDS / 3)
    run.outage("short partition", started_at, ended_at)
    run.wait_until_settled(timeout=60)

    report = run.report()
    run.record("partition of 1 s (timeout 3 s)", report)
    assert_clean(report)
    assert report.by_status == {"SUCCEEDED": 4}
    assert report.service_releases == []
    assert report.extra_runs == 0


def test_a_long_partition_releases_the_job_and_the_cut_off_worker_stops_it(run: FaultRun) -> None:
    # The job would take 10 s; the partition lasts 12 s, four heartbeat timeouts.
    run.worker_env["FAULT_HOLD_SECONDS"] = "10"
    run.worker_env["FAULT_ADVERT"] = "1"
    run.start_service()
    cut = run.start_worker("cut", linked=True)
    [job_id] = run.enqueue(1)
    wait_for(lambda: run.running_jobs(cut) == 1, what="the cut-off worker holding the job")
    rescuer = run.start_worker("rescuer", FAULT_HOLD_SECONDS="0.2")

    started_at, ended_at = partition(run, "cut", 4 * HEARTBEAT_TIMEOUT_SECONDS)
    run.wait_until_settled(timeout=30)
    # Long enough for the cut-off worker to say what it does with its old lease.
    wait_for(lambda: run.running_jobs(cut) == 0, what="the cut-off worker's job gone")

    report = run.report()
    run.record("partition of 12 s (timeout 3 s)", report)
    assert_clean(report)
    history = run.history()
    assert history.final[job_id].locked_by == rescuer
    assert [span.worker for span in report.service_releases] == [cut]
    # Stopped by itself: its job never reached the side effect (nor, so, a Complete), although
    # the partition lasted longer than the job. (What it sent while cut off arrives when the
    # network heals, so the writes' times cannot tell.)
    assert [r for r in history.runs if r.worker == cut] == []
    assert not [w for w in history.writes if w.kind == "complete" and w.lease == 1]
    assert ended_at - started_at > float(run.worker_env["FAULT_HOLD_SECONDS"])


def lost_complete_answers(run: FaultRun) -> str:
    """Six short jobs on one worker, the answers of its first two Completes (batched or single)
    dropped after the queue service carried them out; returns the worker's id."""
    run.worker_env["FAULT_HOLD_SECONDS"] = "0.1"
    run.start_service()
    assert run.recorder is not None
    run.recorder.drop_answers("CompleteBatch", 2)
    run.recorder.drop_answers("Complete", 2)
    worker = run.start_worker("w", "--concurrency", "2")
    run.enqueue(6)
    run.wait_until_settled(timeout=60)
    return worker


def test_a_lost_complete_answer_is_retried_and_counted_once(run: FaultRun) -> None:
    lost_complete_answers(run)

    report = run.report()
    run.record("lost Complete answers", report)
    assert_clean(report)
    assert report.by_status == {"SUCCEEDED": 6}
    lost = [w for w in run.history().writes if w.outcome == "lost"]
    assert len(lost) >= 2, run.recorder.dropped  # type: ignore[union-attr]
    assert report.extra_runs == 0
    assert released_from_live_workers(report, run.faults) == []


def test_a_worker_whose_complete_answer_was_lost_reports_the_job_succeeded(
    run: FaultRun,
) -> None:
    worker = lost_complete_answers(run)

    process = run.workers[worker]
    process.stop()
    assert "lost its lease" not in process.output, process.output
    assert "Jobs succeeded: 6" in process.output, process.output


def test_a_lost_claim_answer_strands_its_jobs_only_until_the_heartbeat_timeout(
    run: FaultRun,
) -> None:
    # The queue service claims the jobs and answers; the answer never reaches the worker. The
    # service cannot know: no heartbeat ever comes for those leases, and the timeout frees them.
    run.worker_env["FAULT_HOLD_SECONDS"] = "0.1"
    run.start_service()
    assert run.recorder is not None
    run.recorder.drop_answers("Claim")
    run.enqueue(6)
    run.start_worker("w", "--concurrency", "2")
    run.wait_until_settled(timeout=60)

    report = run.report()
    run.record("a lost Claim answer", report)
    assert_clean(report)
    assert report.by_status == {"SUCCEEDED": 6}
    assert run.recorder.dropped == ["Claim"]
    # The leases of the lost answer were taken back by the service, never settled by anyone,
    # and their jobs were claimed again and completed.
    assert report.service_releases
    assert {span.lease for span in report.service_releases} == {1}
    assert report.undelivered_claims == len(report.service_releases)
    assert report.extra_runs == 0
