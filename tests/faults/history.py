"""The history of a fault run, and the checker that judges it.

A run records, per job, what each side saw:

- `Claim`: a worker was handed the job under a lease (the recording proxy saw the answer);
- `Write`: a call that changes a job under a lease (Complete, Fail, Release, a heartbeat, an
  advert stored through AdvertService), when
  it was sent, and what the queue service answered: `ok` (accepted), `rejected` (the lease was not
  current: ABORTED, NOT_FOUND, FAILED_PRECONDITION, or LEASE_LOST), `error` (UNAVAILABLE and the
  like: the caller cannot tell), or `lost` (accepted, but the fault injector dropped the answer);
- `Transition`: what the database itself did, from a trigger on the job table (every change of
  status or lease, with the database clock): claims, settlements, stale releases, deletions;
- `Run`: the test pipeline's side effect, one per (job, lease) whose stages ran to their end;
- `FinalState`: each job's row when the run ended;
- `Fault`: what was injected, when, and which workers it hit; `Probe`: a client asking the
  queue service whether it answers, over and over.

`check` turns a history into a `Report`: lost jobs, jobs completed twice, stale writes accepted
(the three that must be zero), plus what shows the faults' cost: side effects run again,
stale writes attempted (and refused), detection times (a fault's victims' jobs runnable again)
and recovery times (the service answering again after an outage).

All times are seconds since the epoch from the one host clock: the test process's `time.time()`
and PostgreSQL's `clock_timestamp()` read the same clock.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

WriteKind = Literal["complete", "fail", "release", "heartbeat", "advert"]
WriteOutcome = Literal["ok", "rejected", "error", "lost"]

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
RUNNABLE = frozenset({"QUEUED", "RETRY"})
# A stale sweep's error codes: a lease that ended this way was not ended by its holder.
STALE_CODES = frozenset({"HEARTBEAT_TIMEOUT", "LOCK_TIMEOUT"})


@dataclass(frozen=True)
class Claim:
    job_id: str
    lease: int
    worker: str
    at: float


@dataclass(frozen=True)
class Write:
    job_id: str
    lease: int
    kind: WriteKind
    sent_at: float
    outcome: WriteOutcome
    answered_at: float | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome in ("ok", "lost")

    @property
    def may_have_landed(self) -> bool:
        """Accepted, or unanswered (the queue service may have carried it out)."""
        return self.outcome != "rejected"


@dataclass(frozen=True)
class Transition:
    """One change the database made to a job: status and lease before and after (a deletion
    has status None after)."""

    job_id: str
    at: float
    status_before: str | None
    status: str | None
    lease_before: int | None
    lease: int | None
    locked_by: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class Run:
    job_id: str
    lease: int
    worker: str
    at: float


@dataclass(frozen=True)
class FinalState:
    job_id: str
    status: str
    lease: int
    attempts: int
    locked_by: str | None = None


@dataclass(frozen=True)
class Fault:
    """What was injected: a name, when it began and ended, and the workers it hit (for a kill or
    a stop; none for an outage, after which recovery is measured from `ended_at`)."""

    name: str
    started_at: float
    ended_at: float
    victims: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Probe:
    at: float
    ok: bool


@dataclass
class History:
    enqueued: list[str] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    final: dict[str, FinalState] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    # Workers still running when the run ended: a RUNNING job held by one of them is in flight,
    # one held by any other worker is stranded.
    live_workers: frozenset[str] = frozenset()


def story(history: History, job_id: str, since: float = 0.0) -> str:
    """One job's history as lines in time order (seconds after `since`): what the database did
    (T), what the clients were handed (C) and sent under a lease (W; heartbeats left out), and
    the side effects (R). For reading a failed run."""
    events: list[tuple[float, str]] = []
    for t in history.transitions:
        if t.job_id == job_id:
            change = f"{t.status_before}->{t.status} lease {t.lease_before}->{t.lease}"
            events.append((t.at, f"T {change} {t.locked_by or ''} {t.error_code or ''}"))
    for c in history.claims:
        if c.job_id == job_id:
            events.append((c.at, f"C lease {c.lease} to {c.worker}"))
    for w in history.writes:
        if w.job_id == job_id and w.kind != "heartbeat":
            events.append((w.sent_at, f"W {w.kind} lease {w.lease}: {w.outcome}"))
    for r in history.runs:
        if r.job_id == job_id:
            events.append((r.at, f"R lease {r.lease} by {r.worker}"))
    lines = [f"{at - since:9.3f} {text.strip()}" for at, text in sorted(events, key=lambda e: e[0])]
    return f"job {job_id}:\n" + "\n".join(lines)


@dataclass(frozen=True)
class LeaseSpan:
    """One lease of one job, as the database saw it: claimed at `start`, ended at `end` (None:
    still current) by the transition `ended_by`."""

    job_id: str
    lease: int
    worker: str | None
    start: float
    end: float | None
    ended_by: Transition | None


@dataclass(frozen=True)
class Detection:
    """A victim's job: how long after the fault it was runnable again (its lease ended), and
    claimed again (None: not within the run)."""

    fault: str
    job_id: str
    lease: int
    released_after: float | None
    reclaimed_after: float | None


@dataclass
class Report:
    jobs: int
    by_status: dict[str, int]
    lost: list[str]
    completed_twice: list[str]
    # Writes under an ended lease that changed something or were told they did: Complete, Fail,
    # Release, StoreAdvert. Must be none.
    stale_accepted: list[Write]
    # Heartbeats under an ended lease answered CONTINUE or CANCEL. Reported, not a violation:
    # a beat that meets its row locked by the very transaction ending the lease is answered from
    # the row as last committed (heartbeat.sql: 'deferred'), which still shows the lease; it
    # writes nothing to the job, and the worker's next beat hears LEASE_LOST.
    stale_beats_acknowledged: list[Write]
    # A completion in the database that no Complete of that lease explains (accepted, or sent
    # and never answered).
    unexplained_completions: list[str]
    # A SUCCEEDED job whose completing lease never ran the pipeline's side effect.
    completed_without_run: list[str]
    # Side effects run more than once for one job (at-least-once delivery: a worker killed
    # after its stages but before its Complete), and how many extra runs that was.
    rerun_jobs: list[str]
    extra_runs: int
    stale_rejected: int
    stale_attempted: list[Write]
    # Leases the database gave out whose Claim answer no worker received (a lost answer, a
    # service killed between its commit and its reply): only a timeout frees them.
    undelivered_claims: int
    # Leases the queue service ended without an accepted Complete, Fail or Release of their
    # holder: the stale sweep (or any other release a fault caused).
    service_releases: list[LeaseSpan]
    detections: list[Detection]
    recoveries: dict[str, float | None]

    @property
    def violations(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} lost: {self.lost[:5]}")
        if self.completed_twice:
            found.append(f"{len(self.completed_twice)} completed twice: {self.completed_twice[:5]}")
        if self.stale_accepted:
            found.append(
                f"{len(self.stale_accepted)} stale writes accepted: {self.stale_accepted[:3]}"
            )
        if self.unexplained_completions:
            found.append(
                f"{len(self.unexplained_completions)} completions no Complete explains: "
                f"{self.unexplained_completions[:5]}"
            )
        if self.completed_without_run:
            found.append(
                f"{len(self.completed_without_run)} completed without running: "
                f"{self.completed_without_run[:5]}"
            )
        return found

    def detection_seconds(self) -> list[float]:
        return sorted(d.released_after for d in self.detections if d.released_after is not None)

    def reclaim_seconds(self) -> list[float]:
        return sorted(d.reclaimed_after for d in self.detections if d.reclaimed_after is not None)

    def figures(self) -> dict[str, object]:
        """The run's figures, as the README's table shows them."""
        detected = self.detection_seconds()
        reclaimed = self.reclaim_seconds()
        return {
            "jobs": self.jobs,
            "by_status": self.by_status,
            "lost": len(self.lost),
            "completed_twice": len(self.completed_twice),
            "stale_accepted": len(self.stale_accepted),
            "stale_beats_acknowledged": len(self.stale_beats_acknowledged),
            "stale_rejected": self.stale_rejected,
            "stale_attempted": len(self.stale_attempted),
            "undelivered_claims": self.undelivered_claims,
            "service_releases": len(self.service_releases),
            "extra_runs": self.extra_runs,
            "victim_jobs": len(self.detections),
            "detection_s": _spread(detected),
            "reclaim_s": _spread(reclaimed),
            "recovery_s": {
                name: None if value is None else round(value, 2)
                for name, value in self.recoveries.items()
            },
        }

    def summary(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.figures().items())


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


# -- the lease timeline -----------------------------------------------------------------------


def lease_spans(history: History) -> dict[tuple[str, int], LeaseSpan]:
    """Every lease of every job, from the database's transitions: a lease starts when a
    transition enters RUNNING with it, and ends at the next transition of that job."""
    by_job: dict[str, list[Transition]] = defaultdict(list)
    for transition in history.transitions:
        by_job[transition.job_id].append(transition)
    spans: dict[tuple[str, int], LeaseSpan] = {}
    for job_id, transitions in by_job.items():
        transitions.sort(key=lambda t: t.at)
        for index, transition in enumerate(transitions):
            if transition.status != "RUNNING" or transition.lease is None:
                continue
            if (
                transition.status_before == "RUNNING"
                and transition.lease_before == transition.lease
            ):
                continue  # not a new lease
            ended_by = next(iter(transitions[index + 1 :]), None)
            spans[(job_id, transition.lease)] = LeaseSpan(
                job_id=job_id,
                lease=transition.lease,
                worker=transition.locked_by,
                start=transition.at,
                end=ended_by.at if ended_by else None,
                ended_by=ended_by,
            )
    return spans


def _repeat_of_own_end(write: Write, span: LeaseSpan) -> bool:
    """Whether the lease ended the way this write ends it: then a write sent after the end is
    an idempotent repeat (a Complete whose answer was lost, sent again), which changes
    nothing."""
    end = span.ended_by
    if end is None or end.lease != span.lease:
        return False
    if write.kind == "complete":
        return end.status == "SUCCEEDED"
    if write.kind == "fail":
        return end.status in ("RETRY", "FAILED", "CANCELLED") and end.error_code not in STALE_CODES
    if write.kind == "release":
        return end.status in ("QUEUED", "CANCELLED")
    return False


# -- the checker ------------------------------------------------------------------------------


def check(history: History) -> Report:
    spans = lease_spans(history)
    enqueued = list(dict.fromkeys(history.enqueued))

    lost = [job_id for job_id in enqueued if _is_lost(history, job_id)]

    accepted_completes: dict[str, set[int]] = defaultdict(set)
    possible_completes: dict[str, set[int]] = defaultdict(set)
    for write in history.writes:
        if write.kind == "complete" and write.accepted:
            accepted_completes[write.job_id].add(write.lease)
        if write.kind == "complete" and write.may_have_landed:
            possible_completes[write.job_id].add(write.lease)
    into_succeeded: Counter[str] = Counter(
        t.job_id for t in history.transitions if t.status == "SUCCEEDED"
    )
    completed_twice = sorted(
        job_id
        for job_id in set(into_succeeded) | set(accepted_completes)
        if into_succeeded[job_id] > 1 or len(accepted_completes[job_id]) > 1
    )

    stale_accepted: list[Write] = []
    stale_beats: list[Write] = []
    stale_attempted: list[Write] = []
    stale_rejected = 0
    for write in history.writes:
        span = spans.get((write.job_id, write.lease))
        # Sent after its lease had ended (or for a lease the database never gave out).
        stale = span is None or (span.end is not None and write.sent_at > span.end)
        if not stale or (span is not None and _repeat_of_own_end(write, span)):
            continue
        stale_attempted.append(write)
        if write.accepted:
            (stale_beats if write.kind == "heartbeat" else stale_accepted).append(write)
        elif write.outcome == "rejected":
            stale_rejected += 1

    runs_by_job: dict[str, list[Run]] = defaultdict(list)
    for run in history.runs:
        runs_by_job[run.job_id].append(run)
    ran = {(run.job_id, run.lease) for run in history.runs}
    unexplained, without_run = [], []
    for transition in history.transitions:
        if transition.status != "SUCCEEDED" or transition.lease is None:
            continue
        if transition.lease not in possible_completes.get(transition.job_id, set()):
            unexplained.append(transition.job_id)
        if (transition.job_id, transition.lease) not in ran:
            without_run.append(transition.job_id)
    extra = {job_id: len(runs) - 1 for job_id, runs in runs_by_job.items() if len(runs) > 1}

    settled = settled_leases(history, spans)
    service_releases = [
        span
        for key, span in spans.items()
        if span.ended_by is not None and span.ended_by.status is not None and key not in settled
    ]

    return Report(
        jobs=len(enqueued),
        by_status=dict(Counter(state.status for state in history.final.values())),
        lost=lost,
        completed_twice=completed_twice,
        stale_accepted=stale_accepted,
        stale_beats_acknowledged=stale_beats,
        unexplained_completions=sorted(set(unexplained)),
        completed_without_run=sorted(set(without_run)),
        rerun_jobs=sorted(extra),
        extra_runs=sum(extra.values()),
        stale_rejected=stale_rejected,
        stale_attempted=stale_attempted,
        service_releases=service_releases,
        undelivered_claims=len(set(spans) - {(c.job_id, c.lease) for c in history.claims}),
        detections=detections(history, spans),
        recoveries=recoveries(history),
    )


def _is_lost(history: History, job_id: str) -> bool:
    """Lost: gone without having finished, or RUNNING for a worker that no longer runs."""
    state = history.final.get(job_id)
    if state is None:
        # Deleted: fine only if it had finished first (retention prunes finished jobs).
        finished = any(
            t.job_id == job_id and t.status is None and t.status_before in TERMINAL
            for t in history.transitions
        )
        return not finished
    if state.status in TERMINAL or state.status in RUNNABLE:
        return False
    if state.status == "RUNNING":
        return state.locked_by not in history.live_workers
    return True


def settled_leases(
    history: History, spans: dict[tuple[str, int], LeaseSpan]
) -> set[tuple[str, int]]:
    """(job, lease) pairs that their holder ended: it sent a Complete, Fail or Release that was
    accepted or may have landed, and the lease ended the way that call ends it (a Complete
    in flight when the stale sweep released the job did not end it)."""
    return {
        (write.job_id, write.lease)
        for write in history.writes
        if write.kind in ("complete", "fail", "release")
        and write.may_have_landed
        and (span := spans.get((write.job_id, write.lease))) is not None
        and _repeat_of_own_end(write, span)
    }


def detections(
    history: History, spans: dict[tuple[str, int], LeaseSpan] | None = None
) -> list[Detection]:
    """For every fault with victims: each lease a victim held when it struck (and did not settle
    itself: a Complete in flight may still land), how long until the lease ended (the job
    runnable again) and until the job was claimed again."""
    spans = lease_spans(history) if spans is None else spans
    settled = settled_leases(history, spans)
    found = []
    for fault in history.faults:
        if not fault.victims:
            continue
        for span in spans.values():
            held = span.start <= fault.started_at and (
                span.end is None or span.end > fault.started_at
            )
            if not held or span.worker not in fault.victims:
                continue
            if (span.job_id, span.lease) in settled:
                continue
            later = [
                other.start
                for other in spans.values()
                if other.job_id == span.job_id and other.lease > span.lease
            ]
            found.append(
                Detection(
                    fault=fault.name,
                    job_id=span.job_id,
                    lease=span.lease,
                    released_after=None if span.end is None else span.end - fault.started_at,
                    reclaimed_after=min(later) - fault.started_at if later else None,
                )
            )
    return found


def recoveries(history: History) -> dict[str, float | None]:
    """For every fault without victims (an outage) that was probed: seconds from its end to the
    first probe the queue service answered (None: it never did within the run)."""
    found: dict[str, float | None] = {}
    probes = sorted(history.probes, key=lambda p: p.at)
    for fault in history.faults:
        if fault.victims or not any(p.at >= fault.ended_at for p in probes):
            continue
        answered = next((p.at for p in probes if p.ok and p.at >= fault.ended_at), None)
        found[fault.name] = None if answered is None else answered - fault.ended_at
    return found
