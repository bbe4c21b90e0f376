"""When the worker's heartbeat stream sends (worker_service/heartbeats.py, the rule in its
docstring): the beats of jobs claimed at random moments settle onto one message an interval,
the ticker never sends twice within half an interval, no job's beats are ever more than an
interval apart, and a job whose beats go unanswered is stopped exactly the heartbeat timeout
after its last acknowledged one.

The stream runs its real code on an event loop of virtual time (`VirtualTimeLoop`): the clock
jumps to the next timer whenever the loop would wait, so an hour of beats takes milliseconds and
the moments recorded are the loop's own. The queue service's side is `Recorder`: every message
recorded with its moment, every beat answered CONTINUE at once (or not at all once `muted`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import selectors
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import pytest

from jobqueue.v1 import queue_service_pb2 as pb
from worker_service.client import QueueCalls
from worker_service.heartbeats import HeartbeatStream

INTERVAL = 5.0
TIMEOUT = 120.0
# Float noise of the virtual clock's sums, far below anything the rules are about.
EPSILON = 1e-6
# How far past its timer the virtual clock lands (far below EPSILON, even summed over a test).
LAG = 1e-9
# A test whose loop spins without its clock moving fails rather than hangs.
MOST_TURNS = 1_000_000
T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """Never waits: a wait of `timeout` moves the loop's clock on by that much instead, and a
    nanosecond more (a real clock's lag), so that float rounding can never leave the loop a hair
    short of its timer, spinning on a wait of (almost) nothing."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        super().__init__()
        self._advance = advance

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise AssertionError("nothing left to run and no timer set: the test would hang")
        if timeout > 0:
            self._advance(timeout + LAG)
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 0.0
        self._turns = 0
        super().__init__(_JumpingSelector(self._advance))

    def _advance(self, seconds: float) -> None:
        self._now += seconds

    def _run_once(self) -> None:
        self._turns += 1
        if self._turns > MOST_TURNS:
            raise AssertionError(f"{MOST_TURNS} turns of the loop by virtual time {self._now}")
        super()._run_once()  # type: ignore[misc]

    def time(self) -> float:
        return self._now


def in_virtual_time(main: Callable[[], Awaitable[T]]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        try:
            loop._turns = 0
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class Recorder:
    """The queue service's side of the heartbeat streams."""

    def __init__(self) -> None:
        # (moment, the job ids it carried): every message, in order.
        self.messages: list[tuple[float, list[str]]] = []
        # job id -> the moment of its last beat that was answered.
        self.answered: dict[str, float] = {}
        self.muted = False

    def heartbeats(self, requests: AsyncIterator[pb.HeartbeatRequest]) -> RecordingCall:
        return RecordingCall(self, requests)

    def beats_of(self, job_id: str) -> list[float]:
        return [at for at, jobs in self.messages if job_id in jobs]


class RecordingCall:
    def __init__(self, recorder: Recorder, requests: AsyncIterator[pb.HeartbeatRequest]) -> None:
        self._recorder = recorder
        self._requests = requests

    def __aiter__(self) -> AsyncIterator[pb.HeartbeatResponse]:
        return self._answers()

    async def _answers(self) -> AsyncIterator[pb.HeartbeatResponse]:
        loop = asyncio.get_running_loop()
        async for request in self._requests:
            now = loop.time()
            self._recorder.messages.append((now, [beat.job_id for beat in request.beats]))
            if self._recorder.muted:
                continue
            response = pb.HeartbeatResponse()
            for beat in request.beats:
                self._recorder.answered[beat.job_id] = now
                response.beats.add(
                    job_id=beat.job_id, lease=beat.lease, action=pb.HEARTBEAT_ACTION_CONTINUE
                )
            yield response

    def cancel(self) -> bool:
        return True


def stream_of(recorder: Recorder) -> HeartbeatStream:
    return HeartbeatStream(cast(QueueCalls, recorder), INTERVAL, "worker-1", TIMEOUT)


def assert_no_beat_gap_beyond_the_interval(
    recorder: Recorder, job_id: str, registered: float, ended: float
) -> None:
    moments = [registered, *recorder.beats_of(job_id), ended]
    gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
    assert max(gaps) <= INTERVAL + EPSILON, (job_id, moments)


def assert_the_ticker_never_sends_twice_within_half_an_interval(recorder: Recorder) -> None:
    moments = [at for at, _ in recorder.messages]
    gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
    assert min(gaps) > INTERVAL / 2, moments
    # Which is to say: at most two messages in any interval.
    for start in moments:
        assert len([at for at in moments if start <= at < start + INTERVAL]) <= 2


@pytest.mark.parametrize("jobs", [10, 100])
@pytest.mark.parametrize("seed", range(5))
def test_jobs_claimed_at_random_moments_settle_onto_one_message_an_interval(
    jobs: int, seed: int
) -> None:
    rng = random.Random(seed)
    recorder = Recorder()
    start, end = 1.0, 1.0 + 20 * INTERVAL
    claimed = {f"job-{n}": start + rng.uniform(0, INTERVAL) for n in range(jobs)}

    async def main() -> None:
        stream = stream_of(recorder)
        stream.start()
        loop = asyncio.get_running_loop()
        for job_id, at in claimed.items():
            loop.call_at(at, stream.register, job_id, 1, lambda _action: None)
        await asyncio.sleep(end - loop.time())
        await stream.stop()

    in_virtual_time(main)

    assert_the_ticker_never_sends_twice_within_half_an_interval(recorder)
    # By the end of the second interval every job beats in the same message, once an interval,
    # exactly an interval apart (not earlier and earlier).
    settled = [(at, ids) for at, ids in recorder.messages if at >= start + 2 * INTERVAL]
    assert all(sorted(ids) == sorted(claimed) for _, ids in settled)
    moments = [at for at, _ in settled]
    assert all(
        abs(later - earlier - INTERVAL) < EPSILON for earlier, later in itertools.pairwise(moments)
    )
    assert len(settled) >= 17
    for job_id, at in claimed.items():
        beats = recorder.beats_of(job_id)
        # The first beat: no sooner than half an interval after the claim, no later than one.
        assert at + INTERVAL / 2 - EPSILON <= beats[0] <= at + INTERVAL + EPSILON
        assert_no_beat_gap_beyond_the_interval(recorder, job_id, at, end)


@pytest.mark.parametrize("seed", range(5))
def test_with_jobs_coming_and_going_no_beat_is_late_and_the_messages_stay_apart(
    seed: int,
) -> None:
    # Ten slots, each running jobs of random lengths (a tenth of an interval to six intervals)
    # back to back: new jobs keep arriving off the rhythm of the others.
    rng = random.Random(100 + seed)
    recorder = Recorder()
    end = 60 * INTERVAL
    lives: dict[str, tuple[float, float]] = {}
    for slot in range(10):
        at = rng.uniform(0, INTERVAL)
        while at < end - 6 * INTERVAL:
            length = rng.uniform(0.1, 6) * INTERVAL
            lives[f"job-{slot}-{len(lives)}"] = (at, at + length)
            at += length + rng.uniform(0, 0.2)

    async def main() -> None:
        stream = stream_of(recorder)
        stream.start()
        loop = asyncio.get_running_loop()
        for job_id, (claimed, ended) in lives.items():
            entry: list[Any] = []
            loop.call_at(
                claimed,
                lambda job_id=job_id, entry=entry: entry.append(
                    stream.register(job_id, 1, lambda _action: None)
                ),
            )
            loop.call_at(ended, lambda entry=entry: stream.unregister(entry[0]))
        await asyncio.sleep(end - loop.time())
        await stream.stop()

    in_virtual_time(main)

    assert_the_ticker_never_sends_twice_within_half_an_interval(recorder)
    for job_id, (claimed, ended) in lives.items():
        beats = recorder.beats_of(job_id)
        assert all(claimed + INTERVAL / 2 - EPSILON <= at <= ended for at in beats), job_id
        if ended - claimed < INTERVAL / 2:
            assert beats == []  # a short job costs no beat at all
        assert_no_beat_gap_beyond_the_interval(recorder, job_id, claimed, ended)


def test_a_stage_change_takes_along_the_beats_due_within_half_an_interval() -> None:
    recorder = Recorder()

    async def main() -> None:
        stream = stream_of(recorder)
        stream.start()
        loop = asyncio.get_running_loop()
        entries = {}
        for job_id, at in (("a", 0.0), ("b", 0.4), ("c", 0.6)):
            await asyncio.sleep(at * INTERVAL - loop.time())
            entries[job_id] = stream.register(job_id, 1, lambda _action: None)
        await asyncio.sleep(0.7 * INTERVAL - loop.time())
        stream.beat_now(entries["c"], stage="transcription")
        await asyncio.sleep(3 * INTERVAL - loop.time())
        await stream.stop()

    in_virtual_time(main)

    assert [(round(at / INTERVAL, 6), ids) for at, ids in recorder.messages] == [
        # c's stage change takes a (due at 1.0), not b (due at 1.4) ...
        (0.7, ["c", "a"]),
        # ... and b's beat falling due takes the other two (due at 1.7): one rhythm from then.
        (1.4, ["b", "c", "a"]),
        (2.4, ["b", "c", "a"]),
    ]


def test_a_job_whose_beats_go_unanswered_is_stopped_exactly_the_timeout_after_its_last_answer() -> (
    None
):
    rng = random.Random(7)
    recorder = Recorder()
    claimed = {f"job-{n}": 1.0 + rng.uniform(0, INTERVAL) for n in range(10)}
    muted_at = 10.3 * INTERVAL
    fenced: dict[str, tuple[float, float]] = {}

    async def main() -> None:
        stream = stream_of(recorder)
        stream.start()
        loop = asyncio.get_running_loop()

        def register(job_id: str) -> None:
            def on_fenced(silent: float) -> None:
                fenced[job_id] = (loop.time(), silent)

            stream.register(job_id, 1, lambda _action: None, on_fenced)

        for job_id, at in claimed.items():
            loop.call_at(at, register, job_id)
        await asyncio.sleep(muted_at - loop.time())
        recorder.muted = True
        await asyncio.sleep(muted_at + TIMEOUT + INTERVAL - loop.time())
        await stream.stop()

    in_virtual_time(main)

    assert sorted(fenced) == sorted(claimed)
    for job_id, (at, silent) in fenced.items():
        last_answered = recorder.answered[job_id]
        # Its beats were answered up to the partition (they came at least once an interval) ...
        assert muted_at - INTERVAL <= last_answered < muted_at
        # ... went on unanswered ...
        assert len([beat for beat in recorder.beats_of(job_id) if beat > muted_at]) >= 20
        # ... and it was stopped the timeout after the last answered one: not sooner, not later.
        assert silent >= TIMEOUT
        assert abs(at - last_answered - TIMEOUT) < EPSILON
        assert abs(silent - TIMEOUT) < EPSILON
