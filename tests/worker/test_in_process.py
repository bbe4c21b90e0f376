"""The worker in-process against a hand-written queue service (tests/worker/fake_queue.py):
the claim loop (`Worker`), one job's life (`JobRun`) and how it is settled, in milliseconds.

Stages here are held by gates the test opens (threading events), and every wait is on a
recorded call or beat of the fake, never a sleep. The real processes are tested in
test_process_behaviour.py and test_failures.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from jobqueue.v1 import job_pb2
from jobqueue.v1 import queue_service_pb2 as pb
from tests.worker.fake_queue import FakeQueue
from tests.worker.pipelines import WaitForGate, fail_as_asked
from worker_service.config import WorkerConfig
from worker_service.heartbeats import HeartbeatStream
from worker_service.job_run import Counters, JobRun, JobRunDeps
from worker_service.pipeline.base import Pipeline, StageContext
from worker_service.pipeline.errors import PermanentError
from worker_service.pipeline_loader import load_pipeline
from worker_service.printer import FLUSH_SECONDS, Printer
from worker_service.runner import PREFETCH_MAX, Worker
from worker_service.settle import SETTLE_BATCH, SETTLES_IN_FLIGHT, Batcher, Settlement
from worker_service.stop_reason import StopReason

ADVERT = {"source_type": "s3", "s3_key": "videos/a.mp4"}
Status = job_pb2.JobStatus


class Finish:
    """Ends the job the way its input's `fail` says; succeeds without one."""

    name = "finish"

    def run(self, ctx: StageContext) -> None:
        fail_as_asked(ctx)
        ctx.output.update(ad_id=f"ad-{ctx.job_id[:8]}", workdir=ctx.workdir)


@dataclass
class Setup:
    fake: FakeQueue = field(default_factory=FakeQueue)
    lines: list[str] = field(default_factory=list)
    gates: dict[str, threading.Event] = field(default_factory=dict)

    def gate(self, name: str) -> threading.Event:
        return self.gates.setdefault(name, threading.Event())

    def held(self, gate: str) -> dict[str, Any]:
        """An input held in the `wait_for_gate` stage until `gate` opens."""
        self.gate(gate)
        return {**ADVERT, "gate": gate}

    def pipeline(self) -> Pipeline:
        return Pipeline(stages=[WaitForGate(lambda gate: self.gate(gate).is_set()), Finish()])

    def worker(self, pipeline: Pipeline | None = None, **config: Any) -> Worker:
        settings = {
            "worker_id": "worker-1",
            "once": True,
            "heartbeat_interval_seconds": 0.05,
            "rpc_timeout_seconds": 1.0,
            **config,
        }
        return Worker(
            WorkerConfig(**settings), self.fake, pipeline or self.pipeline(), self.lines.append
        )

    def line(self, start: str) -> str:
        (found,) = [line for line in self.lines if line.startswith(start)]
        return found


@pytest.fixture
def setup() -> Iterator[Setup]:
    made = Setup()
    yield made
    for gate in made.gates.values():  # no stage thread outlives its test
        gate.set()


@pytest.fixture
async def heartbeats(setup: Setup) -> AsyncIterator[HeartbeatStream]:
    stream = HeartbeatStream(setup.fake, 0.05, "worker-1")
    stream.start()
    yield stream
    await stream.stop()


async def finished(worker: Worker) -> None:
    """Run the worker to its end (or fail the test after 10 s)."""
    async with asyncio.timeout(10):
        await worker.run()


# -- the claim loop ------------------------------------------------------------------------


async def test_claims_as_many_jobs_as_it_has_room_for(setup: Setup) -> None:
    jobs = [setup.fake.add(setup.held(f"job-{i}")) for i in range(5)]
    worker = setup.worker(concurrency=3)
    running = asyncio.create_task(finished(worker))

    await setup.fake.until(lambda: all("wait_for_gate" in setup.fake.stages(j) for j in jobs[:3]))
    assert setup.fake.claims == [3]
    setup.gate("job-0").set()
    # One finished, one slot free: the next claim asks for exactly one.
    await setup.fake.until(lambda: len(setup.fake.claims) == 2)
    assert setup.fake.claims == [3, 1]
    for i in range(5):
        setup.gate(f"job-{i}").set()
    await running

    assert {job_id for method, job_id, _ in setup.fake.calls if method == "complete"} == set(jobs)
    assert max(setup.fake.claims) == 3
    assert worker.counters == Counters(processed=5, succeeded=5, failed=0)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INTERNAL,
        # The server's stop cancels what is still running when its grace runs out.
        grpc.StatusCode.CANCELLED,
    ],
)
async def test_a_claim_the_server_could_not_answer_is_made_again(
    setup: Setup, code: grpc.StatusCode
) -> None:
    job_id = setup.fake.add(ADVERT)
    setup.fake.claim_errors = [code, code]

    worker = setup.worker(limit=1, once=False)
    await finished(worker)

    assert worker.fatal is None
    assert len(setup.fake.claims) == 3
    assert setup.line(f"Job {job_id[:8]} succeeded in")


async def test_a_refused_claim_stops_the_worker(setup: Setup) -> None:
    setup.fake.add(ADVERT)
    setup.fake.claim_errors = [grpc.StatusCode.PERMISSION_DENIED]

    worker = setup.worker(once=False)
    await finished(worker)

    assert worker.fatal is not None and worker.fatal.startswith("PERMISSION_DENIED")
    assert setup.fake.claims == [setup.fake.claims[0]]
    assert worker.counters == Counters(processed=0, succeeded=0, failed=0)


async def test_never_claims_past_the_limit(setup: Setup) -> None:
    for _ in range(4):
        setup.fake.add(ADVERT)

    worker = setup.worker(concurrency=3, limit=2, once=False, poll_interval_seconds=5.0)
    await finished(worker)

    assert setup.fake.claims == [2]
    assert worker.counters == Counters(processed=2, succeeded=2, failed=0)
    assert len(setup.fake.queued) == 2


# -- one job's outcome ---------------------------------------------------------------------


async def test_a_job_that_succeeds_is_completed_with_its_output_and_timings(setup: Setup) -> None:
    job_id = setup.fake.add(ADVERT)
    worker = setup.worker()

    await finished(worker)

    ((output,),) = [[details] for details in setup.fake.called("complete", job_id)]
    assert output["ad_id"] == f"ad-{job_id[:8]}"
    assert set(output["stage_timings"]) == {"wait_for_gate", "finish"}
    assert isinstance(output["workdir"], str)  # sent as plain JSON
    assert setup.fake.stages(job_id)[:2] == ["validating_input", "pipeline_running"]
    assert setup.lines[0] == f"Processing job {job_id[:8]}... (attempt 1/5): s3:videos/a.mp4"
    assert setup.line(f"Job {job_id[:8]} succeeded in").endswith(f"ad_id=ad-{job_id[:8]}")
    assert worker.counters == Counters(processed=1, succeeded=1, failed=0)


async def test_a_transient_failure_is_failed_retryable(setup: Setup) -> None:
    job_id = setup.fake.add({**ADVERT, "fail": "transient"})
    worker = setup.worker()

    await finished(worker)

    assert setup.fake.called("fail", job_id) == [
        {"code": "FLAKY_DEPENDENCY", "message": "the dependency answered 503", "retryable": True}
    ]
    assert setup.fake.called("complete") == []
    assert setup.line(f"Job {job_id[:8]} failed in").endswith(
        "FLAKY_DEPENDENCY: the dependency answered 503 (will retry in 10.0s)"
    )
    assert worker.counters == Counters(processed=1, succeeded=0, failed=1)


async def test_a_permanent_failure_is_failed_for_good(setup: Setup) -> None:
    job_id = setup.fake.add({**ADVERT, "fail": "permanent"})

    await finished(setup.worker())

    (failure,) = setup.fake.called("fail", job_id)
    assert (failure["code"], failure["retryable"]) == ("UNSUPPORTED_MEDIA", False)
    assert setup.line(f"Job {job_id[:8]} failed in").endswith("(will not retry: permanent error)")


async def test_a_pipeline_without_a_validator_leaves_the_input_to_its_stages(setup: Setup) -> None:
    # The worker itself knows nothing of adverts: this input would fail the nine-stage check.
    job_id = setup.fake.add({"anything": True})

    await finished(setup.worker())

    assert len(setup.fake.called("complete", job_id)) == 1


# -- stopping a job ------------------------------------------------------------------------


def deps(setup: Setup, heartbeats: HeartbeatStream, **fields: Any) -> JobRunDeps:
    return JobRunDeps(
        **{
            "client": setup.fake,
            "heartbeats": heartbeats,
            "pipeline": setup.pipeline(),
            "worker_id": "worker-1",
            "say": setup.lines.append,
            "counters": Counters(),
            "give_up": asyncio.Event(),
            **fields,
        }
    )


async def held_run(setup: Setup, heartbeats: HeartbeatStream) -> tuple[JobRun, asyncio.Task[None]]:
    """A JobRun of a claimed job, started and held in its `wait_for_gate` stage."""
    setup.fake.add(setup.held("held"))
    (job,) = await setup.fake.claim("worker-1", 1, 0)
    run = JobRun(job, deps(setup, heartbeats))
    task = asyncio.create_task(run.run())
    await setup.fake.until(lambda: "wait_for_gate" in setup.fake.stages(job.id))
    return run, task


async def test_a_cancel_answered_to_a_heartbeat_stops_the_job_and_fails_it_cancelled(
    setup: Setup, heartbeats: HeartbeatStream
) -> None:
    run, task = await held_run(setup, heartbeats)

    setup.fake.cancelled.add(run.job_id)
    setup.fake.answers[run.job_id] = pb.HEARTBEAT_ACTION_CANCEL
    await asyncio.wait_for(task, 10)

    assert run.stop_reason is StopReason.CANCEL
    (failure,) = setup.fake.called("fail", run.job_id)
    assert (failure["code"], failure["retryable"]) == ("CANCELLED", False)
    assert setup.line(f"Job {run.job_id[:8]} cancelled after")
    assert run.deps.counters == Counters(processed=1, succeeded=0, failed=1)


async def test_a_lost_lease_stops_the_job_without_another_call(
    setup: Setup, heartbeats: HeartbeatStream
) -> None:
    run, task = await held_run(setup, heartbeats)

    setup.fake.answers[run.job_id] = pb.HEARTBEAT_ACTION_LEASE_LOST
    await asyncio.wait_for(task, 10)

    assert run.stop_reason is StopReason.LEASE_LOST
    assert [call for call in setup.fake.calls if call[0] in ("complete", "fail", "release")] == []
    assert setup.line(f"Job {run.job_id[:8]} lost its lease after")
    assert run.deps.counters == Counters(processed=1, succeeded=0, failed=1)


async def test_a_stage_that_finds_its_lease_gone_stops_the_job_the_same_way(setup: Setup) -> None:
    job_id = setup.fake.add({**ADVERT, "fail": "lease"})
    worker = setup.worker()

    await finished(worker)

    assert setup.fake.called("fail") == setup.fake.called("complete") == []
    assert setup.line(f"Job {job_id[:8]} lost its lease after")


async def test_a_shutdown_hands_running_jobs_back(setup: Setup) -> None:
    held = setup.fake.add(setup.held("never"))
    worker = setup.worker(once=False, shutdown_grace_seconds=0.0)
    running = asyncio.create_task(finished(worker))
    await setup.fake.until(lambda: "wait_for_gate" in setup.fake.stages(held))

    worker.request_stop()
    await running

    assert len(setup.fake.called("release", held)) == 1
    assert setup.fake.called("fail") == setup.fake.called("complete") == []
    assert setup.fake.jobs[held].stage == "released"
    assert setup.line(f"Job {held[:8]} handed back after").endswith("(worker shutting down)")
    assert worker.counters == Counters(processed=1, succeeded=0, failed=1)


# -- settling through an outage ------------------------------------------------------------


@pytest.mark.parametrize(
    ("outage", "completes", "reads"),
    [
        # Refused twice (the queue service is restarting), then taken.
        ("refuse", 2, 0),
        # The first lands but its answer is lost on the way back; the repeat is refused (the job
        # is no longer RUNNING), and reading the job back shows that ours landed.
        ("drop_answer", 1, 1),
    ],
)
async def test_complete_is_retried_while_the_queue_service_is_unavailable(
    setup: Setup, outage: str, completes: int, reads: int
) -> None:
    job_id = setup.fake.add(ADVERT)
    getattr(setup.fake, outage)["complete"] = completes

    worker = setup.worker()
    await finished(worker)

    assert len(setup.fake.called("complete", job_id)) == completes + 1
    assert len(setup.fake.called("get_job", job_id)) == reads
    assert setup.line(f"Job {job_id[:8]} succeeded in")
    assert worker.counters == Counters(processed=1, succeeded=1, failed=0)


# -- a pipeline of its own -----------------------------------------------------------------


class Render:
    name = "render"

    def run(self, ctx: StageContext) -> None:
        frames = ctx.input["frames"]
        for frame in range(frames):
            ctx.progress((frame + 1) / frames)
        ctx.output["frames_rendered"] = frames


def check_frames(job_input: Mapping[str, Any]) -> None:
    frames = job_input.get("frames")
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise PermanentError("INVALID_INPUT", f"frames must be a whole number >= 1, got {frames!r}")


def frames_pipeline() -> Pipeline:
    """A WORKER_PIPELINE factory taking no arguments, with an input shape of its own."""
    return Pipeline(stages=[Render()], validate_input=check_frames)


async def test_a_custom_pipeline_runs_its_own_input_shape(setup: Setup) -> None:
    pipeline = load_pipeline(
        "tests.worker.test_in_process:frames_pipeline", {"queue_addr": "unused:1"}
    )
    good = setup.fake.add({"frames": 3})
    bad = setup.fake.add({"frames": "many"})

    await finished(setup.worker(pipeline, concurrency=2))

    (output,) = setup.fake.called("complete", good)
    assert output["frames_rendered"] == 3
    assert set(output["stage_timings"]) == {"render"}
    (failure,) = setup.fake.called("fail", bad)
    assert failure == {
        "code": "INVALID_INPUT",
        "message": "frames must be a whole number >= 1, got 'many'",
        "retryable": False,
    }
    # The bad input never reached a stage.
    assert "render" not in setup.fake.stages(bad)


def test_a_factory_gets_the_queue_arguments_it_declares() -> None:
    offered = {"queue_addr": "queue:50051", "token": "t", "rpc_timeout_seconds": 2.0}
    pipeline = load_pipeline("tests.worker.test_in_process:addressed_pipeline", offered)
    assert pipeline.names == ["render"]
    assert ADDRESSED == [("queue:50051", "t")]


ADDRESSED: list[tuple[str, str | None]] = []


def addressed_pipeline(*, queue_addr: str, token: str | None) -> Pipeline:
    ADDRESSED.append((queue_addr, token))
    return frames_pipeline()


# -- quick jobs: claimed ahead, completed in batches -----------------------------------------


class Quiet:
    """Succeeds without asking for a workdir (a job that only calls a service)."""

    name = "quiet"

    def run(self, ctx: StageContext) -> None:
        ctx.output["ad_id"] = f"ad-{ctx.job_id[:8]}"


class UsesWorkdir:
    """Writes into its workdir, and says where it was."""

    name = "uses_workdir"

    def __init__(self) -> None:
        self.workdirs: list[Path] = []

    def run(self, ctx: StageContext) -> None:
        (ctx.workdir / "frame.jpg").write_bytes(b"jpeg")
        self.workdirs.append(ctx.workdir)


class Blocking:
    """Blocks on the gate its input names, deaf to the stop event (a call that cannot be
    interrupted, a C library that never returns)."""

    name = "blocking"

    def __init__(self, setup: Setup) -> None:
        self._setup = setup

    def run(self, ctx: StageContext) -> None:
        gate = ctx.input.get("block")
        if gate:
            self._setup.gate(gate).wait(30)


def folders_in(path: Path) -> list[Path]:
    return list(path.iterdir())


def beats_of(setup: Setup, job_id: str) -> list[pb.HeartbeatRequest | pb.JobBeat]:
    return [beat for beat in setup.fake.beats if beat.job_id == job_id]


def said_about(setup: Setup, job_id: str) -> list[str]:
    return [line for line in setup.lines if job_id[:8] in line]


async def warm_up(setup: Setup, worker: Worker, jobs: int = 30) -> list[str]:
    """Quick jobs run until the worker has learnt that its jobs are short."""
    quick = [setup.fake.add(ADVERT) for _ in range(jobs)]
    await setup.fake.until(lambda: all(setup.fake.called("complete", j) for j in quick))
    await setup.fake.until(worker.pace.short)
    return quick


async def test_a_burst_of_quick_jobs_is_completed_in_a_few_batch_calls(setup: Setup) -> None:
    jobs = [setup.fake.add(ADVERT) for _ in range(200)]
    worker = setup.worker(Pipeline(stages=[Quiet()]), concurrency=10)

    await finished(worker)

    batches = [size for method, size in setup.fake.batches if method == "complete"]
    assert sum(batches) == 200
    assert len(batches) <= 20, batches
    assert {job_id for method, job_id, _ in setup.fake.calls if method == "complete"} == set(jobs)
    assert worker.counters == Counters(processed=200, succeeded=200, failed=0)
    for job_id in jobs:  # the checklist's two lines for each job, in order
        said = said_about(setup, job_id)
        assert said[0].startswith(f"Processing job {job_id[:8]}... (attempt 1/5)")
        assert said[-1].startswith(f"Job {job_id[:8]} succeeded in")


async def test_settles_go_out_a_few_batch_calls_at_a_time_without_waiting_for_each_answer(
    setup: Setup,
) -> None:
    jobs = [setup.fake.add(ADVERT) for _ in range(3 * SETTLE_BATCH)]
    worker = setup.worker(Pipeline(stages=[Quiet()]), concurrency=10)
    setup.fake.hold["complete"] = answers = asyncio.Event()
    running = asyncio.create_task(finished(worker))

    # No answer comes back, yet a second call leaves beside the first.
    await setup.fake.until(lambda: setup.fake.waiting["complete"] == SETTLES_IN_FLIGHT)
    answers.set()
    await running

    assert setup.fake.most_waiting["complete"] == SETTLES_IN_FLIGHT
    batches = [size for method, size in setup.fake.batches if method == "complete"]
    assert sum(batches) == len(jobs)
    assert max(batches) <= SETTLE_BATCH
    assert worker.counters == Counters(processed=len(jobs), succeeded=len(jobs), failed=0)


async def test_settlements_in_flight_do_not_hold_back_the_next_claim(setup: Setup) -> None:
    worker = setup.worker(Pipeline(stages=[Quiet()]), concurrency=10, once=False)
    running = asyncio.create_task(finished(worker))
    await warm_up(setup, worker)
    setup.fake.hold["complete"] = answers = asyncio.Event()

    # More finished jobs than the worker holds ahead wait for their answers: the queue's next
    # jobs are claimed all the same (only settlements it could not even send would stop it).
    more = [setup.fake.add(ADVERT) for _ in range(PREFETCH_MAX + 100)]
    await setup.fake.until(lambda: all(setup.fake.jobs[j].lease == 1 for j in more))
    answers.set()
    await setup.fake.until(lambda: all(setup.fake.called("complete", j) for j in more))
    worker.request_stop()
    await running


async def test_jobs_claimed_ahead_beat_while_they_wait_and_a_stop_hands_them_back_uncounted(
    setup: Setup,
) -> None:
    pipeline = Pipeline(stages=[WaitForGate(lambda gate: setup.gate(gate).is_set()), Quiet()])
    worker = setup.worker(
        pipeline, concurrency=2, once=False, poll_interval_seconds=0.2, shutdown_grace_seconds=0
    )
    running = asyncio.create_task(finished(worker))
    quick = await warm_up(setup, worker)

    held = [setup.fake.add(setup.held(f"slot-{i}")) for i in range(2)]
    ahead = [setup.fake.add(ADVERT) for _ in range(3)]
    # Both slots are held; the other three are claimed all the same, and wait for a slot.
    await setup.fake.until(lambda: all("wait_for_gate" in setup.fake.stages(j) for j in held))
    await setup.fake.until(lambda: all(setup.fake.jobs[j].lease == 1 for j in ahead))
    # Waiting longer than a heartbeat interval, each keeps its lease alive by its own beats,
    # and says nothing: it has not started.
    await setup.fake.until(lambda: all(len(beats_of(setup, j)) >= 2 for j in ahead))
    assert {beat.stage for j in ahead for beat in beats_of(setup, j)} == {""}  # still "claimed"
    # The jobs a worker holds beat together: one message carries them all.
    assert max(setup.fake.beat_messages) >= len(held + ahead)
    assert not [line for j in ahead for line in said_about(setup, j)]

    worker.request_stop()
    await running

    for job_id in ahead:  # handed back at once: runnable again, the attempt not counted
        assert len(setup.fake.called("release", job_id)) == 1
        job = setup.fake.jobs[job_id]
        assert (job.status, job.stage, job.attempts) == (Status.JOB_STATUS_QUEUED, "released", 0)
        assert not said_about(setup, job_id)
    for job_id in held:  # running, out of grace: handed back and said so
        assert said_about(setup, job_id)[-1].endswith("(worker shutting down)")
    assert worker.counters == Counters(processed=len(quick) + 2, succeeded=len(quick), failed=2)


async def test_a_pipeline_that_never_asks_for_a_workdir_gets_none(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for _ in range(5):
        setup.fake.add(ADVERT)

    await finished(setup.worker(Pipeline(stages=[Quiet()])))

    assert setup.fake.called("complete") and folders_in(tmp_path) == []

    # One that asks gets a folder of its own while it runs, deleted when it ends.
    setup.fake.add(ADVERT)
    stage = UsesWorkdir()
    await finished(setup.worker(Pipeline(stages=[stage])))
    (workdir,) = stage.workdirs
    assert workdir.parent == tmp_path and folders_in(tmp_path) == []


async def test_a_stage_that_blocks_and_ignores_its_stop_holds_up_no_other_job(
    setup: Setup,
) -> None:
    gate = WaitForGate(lambda name: setup.gate(name).is_set())
    pipeline = Pipeline(stages=[Blocking(setup), gate, Quiet()])
    worker = setup.worker(pipeline, concurrency=2, once=False, poll_interval_seconds=0.2)
    running = asyncio.create_task(finished(worker))
    stuck = setup.fake.add({**ADVERT, "block": "never"})
    await setup.fake.until(lambda: "blocking" in setup.fake.stages(stuck))
    held = setup.fake.add(setup.held("held"))
    await setup.fake.until(lambda: "wait_for_gate" in setup.fake.stages(held))

    # One stage blocks its thread, never the event loop: both jobs go on beating.
    seen = {job_id: len(beats_of(setup, job_id)) for job_id in (stuck, held)}
    await setup.fake.until(lambda: all(len(beats_of(setup, j)) >= seen[j] + 3 for j in seen))

    # Cancelled, it is settled at once though its stage goes on; its thread no longer counts
    # against the two, so the next job runs beside the held one.
    setup.fake.cancelled.add(stuck)
    setup.fake.answers[stuck] = pb.HEARTBEAT_ACTION_CANCEL
    await setup.fake.until(lambda: setup.fake.called("fail", stuck))
    after = setup.fake.add(ADVERT)
    await setup.fake.until(lambda: setup.fake.called("complete", after))
    setup.gate("held").set()
    await setup.fake.until(lambda: setup.fake.called("complete", held))
    worker.request_stop()
    await running

    assert setup.fake.jobs[stuck].status == Status.JOB_STATUS_CANCELLED
    assert said_about(setup, stuck)[-1].startswith(f"Job {stuck[:8]} cancelled after")
    assert worker.counters == Counters(processed=3, succeeded=2, failed=1)


async def test_each_job_in_a_batch_is_settled_by_its_own_outcome(setup: Setup) -> None:
    jobs = [setup.fake.add(setup.held(f"gate-{i}")) for i in range(3)]
    worker = setup.worker(concurrency=3)
    running = asyncio.create_task(finished(worker))
    await setup.fake.until(lambda: all("wait_for_gate" in setup.fake.stages(j) for j in jobs))

    # The middle one was released as stale and claimed again elsewhere meanwhile.
    setup.fake.jobs[jobs[1]].lease += 1
    for i in range(3):
        setup.gate(f"gate-{i}").set()
    await running

    statuses = [setup.fake.jobs[job_id].status for job_id in jobs]
    assert statuses == [
        Status.JOB_STATUS_SUCCEEDED,
        Status.JOB_STATUS_RUNNING,  # the new owner's, untouched
        Status.JOB_STATUS_SUCCEEDED,
    ]
    assert said_about(setup, jobs[1])[-1].startswith(f"Job {jobs[1][:8]} lost its lease")
    assert worker.counters == Counters(processed=3, succeeded=2, failed=1)


async def test_a_batch_call_that_fails_on_this_side_settles_each_job_alone(setup: Setup) -> None:
    # Not a gRPC status: without a fallback its jobs stayed settling (and beating) for ever.
    jobs = [setup.fake.add(ADVERT) for _ in range(3)]
    setup.fake.crash["complete"] = 1
    worker = setup.worker(Pipeline(stages=[Quiet()]), concurrency=3)

    await finished(worker)

    assert all(setup.fake.jobs[j].status == Status.JOB_STATUS_SUCCEEDED for j in jobs)
    assert worker.counters == Counters(processed=3, succeeded=3, failed=0)


@pytest.mark.parametrize("leases", [(1, 2), (2, 1)])
async def test_a_batch_answer_is_read_in_place_even_for_one_job_under_two_leases(
    leases: tuple[int, int],
) -> None:
    # A re-claimed job's old run and new run may settle in one batch call: read by id, both got
    # the last answer (the stale run was told it succeeded, or the new one that it lost).
    class Service:
        async def complete_batch(self, entries: list[pb.CompleteRequest]) -> list[pb.EntryResult]:
            return [
                pb.EntryResult(
                    job_id=entry.job_id,
                    outcome=pb.OUTCOME_OK if entry.lease == 2 else pb.OUTCOME_LEASE_LOST,
                )
                for entry in entries
            ]

    class Run:
        def __init__(self, lease: int) -> None:
            self.job_id, self.lease = "job", lease
            self.log = logging.LoggerAdapter(logging.getLogger(__name__), {})

        def lease_lost(self) -> bool:
            return False

    settled: dict[int, bool] = {}  # by lease: did this run's Complete land?
    done = asyncio.Event()

    def answer(lease: int) -> Callable[[object], None]:
        def record(job: object) -> None:
            settled[lease] = job is not None
            if len(settled) == 2:
                done.set()

        return record

    batcher = Batcher.completes(Service(), asyncio.Event(), "worker-1")  # type: ignore[arg-type]
    for lease in leases:
        request = pb.CompleteRequest(job_id="job", lease=lease)
        batcher.add(Settlement(request, Run(lease), answer(lease)))  # type: ignore[arg-type]
    batcher.start()
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        await batcher.stop()
    assert settled == {1: False, 2: True}


async def test_a_locked_entry_is_sent_again_alone_and_holds_back_no_other_job(
    setup: Setup,
) -> None:
    # Review finding 1: one locked row failed the whole CompleteBatch, and the worker sent the
    # whole batch again for as long as the lock lasted; no other job of it was completed.
    jobs = [setup.fake.add(setup.held(f"gate-{i}")) for i in range(3)]
    setup.fake.locked.add(jobs[1])  # an operator's open transaction over the middle job's row
    worker = setup.worker(concurrency=3)
    running = asyncio.create_task(finished(worker))
    await setup.fake.until(lambda: all("wait_for_gate" in setup.fake.stages(j) for j in jobs))
    for i in range(3):
        setup.gate(f"gate-{i}").set()

    # The others complete while the lock lasts; the locked one is sent again, on its own.
    await setup.fake.until(lambda: len(setup.fake.called("complete", jobs[1])) >= 3)
    statuses = [setup.fake.jobs[job_id].status for job_id in jobs]
    assert statuses == [
        Status.JOB_STATUS_SUCCEEDED,
        Status.JOB_STATUS_RUNNING,
        Status.JOB_STATUS_SUCCEEDED,
    ]
    assert len(setup.fake.called("complete", jobs[0])) == 1
    assert len(setup.fake.called("complete", jobs[2])) == 1

    setup.fake.locked.clear()  # the transaction ends
    await running
    assert setup.fake.jobs[jobs[1]].status == Status.JOB_STATUS_SUCCEEDED
    assert worker.counters == Counters(processed=3, succeeded=3, failed=0)


# -- the output lines ----------------------------------------------------------------------


class CountedWrites(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_output_lines_are_written_together_and_promptly() -> None:
    stream = CountedWrites()
    printer = Printer(stream)

    for i in range(100):
        printer.say(f"line {i}")
    await asyncio.to_thread(printer.say, "said by a stage thread")
    assert stream.getvalue() == ""  # gathered, not yet written

    async with asyncio.timeout(5):  # written within FLUSH_SECONDS, unasked
        while not stream.getvalue():
            await asyncio.sleep(FLUSH_SECONDS / 5)
    assert stream.getvalue().splitlines() == [
        *(f"line {i}" for i in range(100)),
        "said by a stage thread",
    ]
    assert stream.writes == 1

    printer.say("the last line")
    printer.flush()  # the worker flushes when it goes idle and before it exits
    assert stream.getvalue().splitlines()[-1] == "the last line"
    assert stream.writes == 2
