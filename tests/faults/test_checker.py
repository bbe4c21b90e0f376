"""The history checker on crafted histories: a clean one passes, and each kind of violation in
an otherwise clean history is caught and named, so the fault runs cannot pass vacuously."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.faults.history import (
    Claim,
    Fault,
    FinalState,
    History,
    Probe,
    Run,
    Transition,
    Write,
    WriteKind,
    check,
    story,
)

pytestmark = pytest.mark.faults

A, B, C = "job-a", "job-b", "job-c"


def clean() -> History:
    """Three jobs. A: claimed by w1, completed. B: w2 was killed at t=10 holding it; the sweep
    released it at 13, w3 claimed it at 13.5 and completed it; w2's late Complete was refused.
    C: claimed by w1 and completed, its first Complete's answer lost and the repeat accepted."""
    return History(
        enqueued=[A, B, C],
        claims=[
            Claim(A, 1, "w1", 1.0),
            Claim(B, 1, "w2", 2.0),
            Claim(B, 2, "w3", 13.5),
            Claim(C, 1, "w1", 3.0),
        ],
        writes=[
            Write(A, 1, "heartbeat", 1.5, "ok", 1.6),
            Write(A, 1, "complete", 2.0, "ok", 2.1),
            Write(B, 1, "heartbeat", 3.0, "ok", 3.1),
            Write(B, 2, "complete", 15.0, "ok", 15.1),
            Write(B, 1, "complete", 16.0, "rejected", 16.1),
            Write(B, 1, "heartbeat", 16.0, "rejected", 16.1),
            Write(C, 1, "complete", 4.0, "lost", 4.1),
            Write(C, 1, "complete", 5.0, "ok", 5.1),
        ],
        transitions=[
            Transition(A, 0.5, None, "QUEUED", None, 0),
            Transition(B, 0.5, None, "QUEUED", None, 0),
            Transition(C, 0.5, None, "QUEUED", None, 0),
            Transition(A, 1.0, "QUEUED", "RUNNING", 0, 1, "w1"),
            Transition(A, 2.05, "RUNNING", "SUCCEEDED", 1, 1, "w1"),
            Transition(B, 2.0, "QUEUED", "RUNNING", 0, 1, "w2"),
            Transition(B, 13.0, "RUNNING", "RETRY", 1, 1, "w2", "HEARTBEAT_TIMEOUT"),
            Transition(B, 13.5, "RETRY", "RUNNING", 1, 2, "w3"),
            Transition(B, 15.05, "RUNNING", "SUCCEEDED", 2, 2, "w3"),
            Transition(C, 3.0, "QUEUED", "RUNNING", 0, 1, "w1"),
            Transition(C, 4.05, "RUNNING", "SUCCEEDED", 1, 1, "w1"),
        ],
        runs=[
            Run(A, 1, "w1", 1.9),
            Run(B, 1, "w2", 9.0),
            Run(B, 2, "w3", 14.9),
            Run(C, 1, "w1", 3.9),
        ],
        final={
            A: FinalState(A, "SUCCEEDED", 1, 1, "w1"),
            B: FinalState(B, "SUCCEEDED", 2, 2, "w3"),
            C: FinalState(C, "SUCCEEDED", 1, 1, "w1"),
        },
        faults=[Fault("SIGKILL w2", 10.0, 10.0, frozenset({"w2"})), Fault("outage", 20.0, 30.0)],
        probes=[Probe(25.0, False), Probe(30.5, False), Probe(31.2, True)],
        live_workers=frozenset({"w1", "w3"}),
    )


def test_a_clean_history_passes_with_its_figures() -> None:
    report = check(clean())

    assert report.violations == []
    assert report.by_status == {"SUCCEEDED": 3}
    # B's side effect ran twice (w2 got through its stages before it was killed): at least once.
    assert (report.rerun_jobs, report.extra_runs) == ([B], 1)
    # w2's late Complete and heartbeat were refused; C's repeated Complete is not stale.
    assert report.stale_rejected == 2
    assert [(span.job_id, span.lease) for span in report.service_releases] == [(B, 1)]
    [detection] = report.detections
    assert (detection.job_id, detection.lease) == (B, 1)
    assert detection.released_after == 3.0
    assert detection.reclaimed_after == 3.5
    assert report.recoveries["outage"] == pytest.approx(1.2)
    assert report.undelivered_claims == 0


def test_a_lease_no_worker_heard_of_is_an_undelivered_claim() -> None:
    history = clean()
    history.claims = [claim for claim in history.claims if (claim.job_id, claim.lease) != (B, 2)]

    assert check(history).undelivered_claims == 1


def test_a_victim_s_job_whose_complete_landed_after_the_kill_needs_no_detection() -> None:
    history = clean()
    # w2 sent its Complete just before it was killed; it landed at 10.2.
    history.writes = [w for w in history.writes if (w.job_id, w.lease) != (B, 2)]
    history.writes.append(Write(B, 1, "complete", 9.9, "error"))
    history.runs = [run for run in history.runs if (run.job_id, run.lease) != (B, 2)]
    history.transitions = [t for t in history.transitions if t.job_id != B or t.at < 13.0]
    history.transitions.append(Transition(B, 10.2, "RUNNING", "SUCCEEDED", 1, 1, "w2"))
    history.final[B] = FinalState(B, "SUCCEEDED", 1, 1, "w2")

    report = check(history)

    assert report.violations == []
    assert report.detections == []
    assert report.service_releases == []


def test_a_job_s_story_tells_its_history_in_time_order() -> None:
    told = story(clean(), B, since=10.0).splitlines()

    assert told[0] == "job job-b:"
    assert [line.split(maxsplit=1)[1] for line in told[1:]] == [
        "T None->QUEUED lease None->0",
        "T QUEUED->RUNNING lease 0->1 w2",
        "C lease 1 to w2",
        "R lease 1 by w2",
        "T RUNNING->RETRY lease 1->1 w2 HEARTBEAT_TIMEOUT",
        "T RETRY->RUNNING lease 1->2 w3",
        "C lease 2 to w3",
        "R lease 2 by w3",
        "W complete lease 2: ok",
        "T RUNNING->SUCCEEDED lease 2->2 w3",
        "W complete lease 1: rejected",
    ]
    assert told[1].split()[0] == "-9.500"


def test_a_complete_in_flight_when_the_sweep_released_the_job_did_not_end_its_lease() -> None:
    history = clean()
    # w2's Complete went out at 12.9 and was never answered; the sweep released B at 13.0.
    history.writes.append(Write(B, 1, "complete", 12.9, "error"))

    report = check(history)

    assert [(span.job_id, span.lease) for span in report.service_releases] == [(B, 1)]
    assert len(report.detections) == 1


def test_a_job_stranded_with_a_dead_worker_is_lost() -> None:
    history = clean()
    history.final[A] = FinalState(A, "RUNNING", 1, 1, "w2")

    assert check(history).lost == [A]


def test_a_job_that_vanished_unfinished_is_lost_and_a_pruned_finished_one_is_not() -> None:
    history = clean()
    del history.final[A]
    del history.final[C]
    history.transitions.append(Transition(C, 40.0, "SUCCEEDED", None, 1, None))

    assert check(history).lost == [A]


def test_queued_and_in_flight_jobs_are_not_lost() -> None:
    history = clean()
    history.final[A] = FinalState(A, "RETRY", 1, 1)
    history.final[C] = FinalState(C, "RUNNING", 1, 1, "w1")

    assert check(history).lost == []


def test_two_accepted_completions_of_one_job_are_caught() -> None:
    # From the clients' side: w2's Complete under the dead lease 1 was answered OK.
    by_clients = clean()
    by_clients.writes = [
        replace(w, outcome="ok") if (w.job_id, w.kind, w.lease) == (B, "complete", 1) else w
        for w in by_clients.writes
    ]
    # From the database's side: B went into SUCCEEDED twice.
    by_database = clean()
    by_database.transitions.append(Transition(B, 16.0, "RUNNING", "SUCCEEDED", 2, 2, "w3"))

    assert check(by_clients).completed_twice == [B]
    assert check(by_database).completed_twice == [B]


@pytest.mark.parametrize("kind", ["advert", "complete", "fail", "release"])
def test_an_accepted_write_under_an_ended_lease_is_caught(kind: WriteKind) -> None:
    history = clean()
    stale = Write(B, 1, kind, 14.0, "ok", 14.1)
    history.writes.append(stale)

    report = check(history)

    assert stale in report.stale_accepted
    assert report.violations


def test_a_heartbeat_acknowledged_under_an_ended_lease_is_reported_apart() -> None:
    history = clean()
    beat = Write(B, 1, "heartbeat", 13.001, "ok", 13.02)
    history.writes.append(beat)

    report = check(history)

    assert report.stale_beats_acknowledged == [beat]
    assert report.stale_accepted == []
    assert report.figures()["stale_beats_acknowledged"] == 1


def test_a_write_under_a_lease_never_given_out_is_stale() -> None:
    history = clean()
    forged = Write(A, 7, "fail", 3.0, "ok", 3.1)
    history.writes.append(forged)

    assert check(history).stale_accepted == [forged]


def test_a_completion_no_complete_explains_is_caught() -> None:
    history = clean()
    history.writes = [w for w in history.writes if (w.job_id, w.kind) != (A, "complete")]
    refused = clean()
    refused.writes = [
        replace(w, outcome="rejected") if (w.job_id, w.kind) == (A, "complete") else w
        for w in refused.writes
    ]
    # A Complete whose caller was killed before the answer explains it: it may have landed.
    unanswered = clean()
    unanswered.writes = [
        replace(w, outcome="error") if (w.job_id, w.kind) == (A, "complete") else w
        for w in unanswered.writes
    ]

    assert check(history).unexplained_completions == [A]
    assert check(refused).unexplained_completions == [A]
    assert check(unanswered).violations == []


def test_a_completion_without_its_side_effect_is_caught() -> None:
    history = clean()
    history.runs = [run for run in history.runs if (run.job_id, run.lease) != (B, 2)]

    report = check(history)

    assert report.completed_without_run == [B]
    assert report.violations


def test_a_service_that_never_answers_again_has_no_recovery_time() -> None:
    history = clean()
    history.probes = [Probe(25.0, False), Probe(31.0, False)]

    assert check(history).recoveries == {"outage": None}
