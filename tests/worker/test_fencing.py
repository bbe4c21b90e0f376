"""A worker's own side of liveness, in-process against the fake queue service
(tests/worker/fake_queue.py): beats kept within the service's limits, a refused beat logged once
and not taken for an acknowledgment, and a job whose beats go unacknowledged for the heartbeat
timeout stopped and never completed (StopReason.FENCED). The real processes, a real partition
and the service's side: test_liveness.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from jobqueue.v1 import job_pb2
from jobqueue.v1 import queue_service_pb2 as pb
from tests.worker.fake_queue import FakeHeartbeatCall, FakeQueue
from tests.worker.test_in_process import Counters, Setup, deps, finished, setup  # noqa: F401
from worker_service.heartbeats import Beating, HeartbeatStream
from worker_service.job_run import JobRun
from worker_service.stop_reason import StopReason

INTERVAL, TIMEOUT = 0.05, 0.5
Status = job_pb2.JobStatus


class MutedQueue(FakeQueue):
    """The fake queue service whose heartbeat answers stop while `muted` is set: beats are
    received and recorded, answers held back (a partition that lets requests through)."""

    def __init__(self) -> None:
        super().__init__()
        self.muted = asyncio.Event()

    def heartbeats(self, requests: AsyncIterator[pb.HeartbeatRequest]) -> FakeHeartbeatCall:
        return MutedCall(self, requests)


class MutedCall(FakeHeartbeatCall):
    def __init__(self, queue: MutedQueue, requests: AsyncIterator[pb.HeartbeatRequest]) -> None:
        super().__init__(queue, requests)
        self._muted = queue.muted

    async def _answers(self) -> AsyncIterator[pb.HeartbeatResponse]:
        async for response in super()._answers():
            if not self._muted.is_set():
                yield response


@pytest.fixture
async def stream(setup: Setup) -> AsyncIterator[HeartbeatStream]:  # noqa: F811
    setup.fake = MutedQueue()
    beats = HeartbeatStream(setup.fake, INTERVAL, "worker-1", TIMEOUT)
    beats.start()
    yield beats
    await beats.stop()


async def held(setup: Setup, stream: HeartbeatStream) -> tuple[JobRun, asyncio.Task[None]]:  # noqa: F811
    setup.fake.add(setup.held("held"))
    (job,) = await setup.fake.claim("worker-1", 1, 0)
    run = JobRun(job, deps(setup, stream))
    task = asyncio.create_task(run.run())
    await setup.fake.until(lambda: "wait_for_gate" in setup.fake.stages(job.id))
    return run, task


def test_a_beat_says_what_the_service_accepts() -> None:
    entry = Beating("job", 1, lambda _: None, stage="s" * 150 + "\x00", progress=float("nan"))
    beat = entry.beat()
    assert (beat.stage, beat.progress) == ("s" * 100, 0.0)
    entry.stage, entry.progress = "transcription", 1.5
    assert (entry.beat().stage, entry.beat().progress) == ("transcription", 1.0)


async def test_a_job_whose_beats_go_unanswered_for_the_timeout_stops_and_is_never_completed(
    setup: Setup,  # noqa: F811
    stream: HeartbeatStream,
) -> None:
    run, task = await held(setup, stream)
    assert isinstance(setup.fake, MutedQueue)
    beats_before = len(setup.fake.beats)
    setup.fake.muted.set()

    await asyncio.wait_for(task, 10)

    assert run.stop_reason is StopReason.FENCED
    assert run.stop_event.is_set()  # its stages were told to stop
    # Beats kept going out until the timeout (they were simply not answered) ...
    assert len(setup.fake.beats) > beats_before
    # ... and then no call at all: not a Complete, not a Fail, not a Release.
    assert [call for call in setup.fake.calls if call[0] in ("complete", "fail", "release")] == []
    line = setup.line(f"Job {run.job_id[:8]} stopped after")
    assert "no heartbeat acknowledged for 0.5" in line and line.endswith("not completing it")
    assert run.deps.counters == Counters(processed=1, succeeded=0, failed=1)
    setup.gate("held").set()


async def test_a_finished_job_whose_complete_waits_is_dropped_at_the_timeout(
    setup: Setup,  # noqa: F811
    stream: HeartbeatStream,
) -> None:
    # The job finished, but its Complete cannot get through (the service answers UNAVAILABLE)
    # and its beats go unanswered: at the timeout the Complete is dropped, never sent again.
    run, task = await held(setup, stream)
    assert isinstance(setup.fake, MutedQueue)
    setup.fake.muted.set()
    setup.fake.refuse["complete"] = 1_000
    setup.gate("held").set()

    await asyncio.wait_for(task, 10)

    assert run.stop_reason is StopReason.FENCED
    assert setup.fake.called("complete")  # tried, and refused: none landed
    assert setup.fake.jobs[run.job_id].status == Status.JOB_STATUS_RUNNING
    # Its run ended: the Complete was dropped, not retried for as long as the service refused.
    assert setup.line(f"Job {run.job_id[:8]} stopped after")


async def test_a_refused_beat_is_logged_once_and_the_job_runs_on(
    setup: Setup,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A refused beat is no acknowledgment, so the timeout here is far away: the job runs on
    # until its own end.
    stream = HeartbeatStream(setup.fake, INTERVAL, "worker-1", 60.0)
    stream.start()
    try:
        with caplog.at_level(logging.WARNING, logger="worker_service.heartbeats"):
            run, task = await held(setup, stream)
            setup.fake.answers[run.job_id] = pb.HEARTBEAT_ACTION_INVALID
            beats = len(setup.fake.beats)
            await setup.fake.until(lambda: len(setup.fake.beats) >= beats + 5)
            setup.gate("held").set()
            await asyncio.wait_for(task, 10)
    finally:
        await stream.stop()
    refused = [r for r in caplog.records if "refused a heartbeat" in r.getMessage()]
    assert len(refused) == 1
    assert run.stop_reason is None
    assert setup.fake.jobs[run.job_id].status == Status.JOB_STATUS_SUCCEEDED
