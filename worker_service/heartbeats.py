"""One heartbeat stream per worker process, carrying every job it holds, many beats a message.

Each job the worker holds (running, or claimed ahead and waiting for a slot) beats at least once
every HEARTBEAT_INTERVAL_SECONDS; a stage change is sent at once when the job run asks for it
(`beat_now`). The queue service answers each beat with CONTINUE, CANCEL or LEASE_LOST, and the
answer is handed to the job that sent it. A job whose worker stops beating (a crash, a paused
process) is released after the service's HEARTBEAT_TIMEOUT_SECONDS and retried elsewhere, which
is why the interval must stay well under that timeout.

Beats go out together, since a message costs the queue service far more than a beat inside one.
The rule: a job's next beat falls due one interval after its last one (after its claim, for the
first), and whenever a message goes out (a beat fell due, or a stage change) it also takes every
job whose beat falls due within the next half interval. Hence:
- a beat may come early, never late: no job's beats are more than an interval apart (but for
  the event loop's own lag), and the fencing clock below only ever sees earlier beats;
- jobs taken together fall due together again, so a worker's jobs settle onto one rhythm: one
  message an interval, and one more, once, for a job claimed off that rhythm;
- the ticker never sends within half an interval of the last message (a reconnect's aside:
  that one beats every job and leaves their rhythm as it was), so however the claims fall it
  sends at most two messages an interval (stage changes send their own at once);
- a job's first beat comes between half an interval and one interval after its claim: a job
  shorter than half an interval costs no beat at all.
Nothing waits for company: the beats taken leave when the loop next turns, in one
HeartbeatRequest (`beats`), answered in one response.

When the stream breaks (the queue service restarted, the network blinked) it is reopened with
capped exponential backoff. Leases are not touched: jobs keep running, their next beats go out
on the new stream, and as long as that happens within the timeout nothing was lost. A stream
that breaks without a word tells the queue service that the worker died: it releases the jobs
last beaten on it within seconds unless they are beaten again (queue_service/orphans.py), which
is why a reconnect beats every job at once. The stream is therefore ended cleanly (a half-close)
whenever the worker chooses to end it: before its deadline, and when the worker stops.

Fencing: a job none of whose beats was acknowledged for HEARTBEAT_TIMEOUT_SECONDS (counted from
when the last acknowledged beat was taken, or from its claim) may have been released by the
queue service already, so it is stopped (`on_fenced`) and never completed. An answer is matched
to its beat by the stream it came on: beats lost with a broken stream are never acknowledged.
A beat the service refused as malformed (INVALID) is no acknowledgment either; it is logged once
per job, and the job runs on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from jobqueue import rpc
from jobqueue.v1 import queue_service_pb2 as pb
from worker_service.client import HEARTBEAT_STREAM_SECONDS, QueueCalls

log = logging.getLogger(__name__)

RECONNECT_INITIAL_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
# A message takes every beat falling due within this share of an interval (so a beat may go out
# that much early, never late). Half an interval: the ticker's messages are more than that apart,
# so at most two an interval, and jobs taken together stay together (see the module).
GATHER_SHARE = 0.5
# The most beats one HeartbeatRequest carries (the queue service's limit).
MAX_BEATS = 10_000
# The longest stage name the queue service takes: a longer one is cut, not refused.
MAX_STAGE = 100
# The stream is closed (and reopened) this long before its deadline would break it.
ROTATE_MARGIN_SECONDS = 30.0

# Answers that say the service heard the beat and holds the job as alive under its lease (or
# is telling the worker what to do with it): everything but INVALID and an unset action.
UNACKNOWLEDGED = frozenset({pb.HEARTBEAT_ACTION_UNSPECIFIED, pb.HEARTBEAT_ACTION_INVALID})


@dataclass(eq=False)
class Beating:
    """One job's entry in the stream: what its next beat says, and who hears the answer."""

    job_id: str
    lease: int
    on_action: Callable[[int], None]
    # Empty: the job's stage is left as the claim set it ("claimed").
    stage: str = ""
    # Written by the stage thread (a float assignment is atomic under the GIL), read by the ticker.
    progress: float = 0.0
    # When the next regular beat is due (event loop time).
    due: float = 0.0
    # Told how long the job went unacknowledged, once, when that reaches the timeout.
    on_fenced: Callable[[float], None] | None = None
    # When the last acknowledged beat was taken (its claim, until one is).
    acked: float = 0.0
    # The beats on their way: (the stream they went on, when they were taken), oldest first.
    in_flight: deque[tuple[int, float]] = field(default_factory=deque)
    refused_logged: bool = False

    def beat(self) -> pb.JobBeat:
        """What it says now (a beat taken now says the stage it had now, whatever comes next),
        within the service's limits: a beat it refused would not count as one."""
        stage = self.stage
        if len(stage) > MAX_STAGE or "\x00" in stage:
            stage = stage.replace("\x00", "")[:MAX_STAGE]
        progress = self.progress
        return pb.JobBeat(
            job_id=self.job_id,
            lease=self.lease,
            stage=stage,
            progress=min(1.0, max(0.0, progress)) if progress == progress else 0.0,
        )


class HeartbeatStream:
    def __init__(
        self,
        client: QueueCalls,
        interval_seconds: float,
        worker_id: str,
        timeout_seconds: float = 120.0,
    ) -> None:
        self._client = client
        self._interval = interval_seconds
        self._worker_id = worker_id
        self._timeout = timeout_seconds
        # Counts the streams opened: an answer acknowledges a beat of its own stream only.
        self._generation = 0
        self._closing = False
        # In the order their beats fall due: each beat moves its entry to the end.
        self._jobs: dict[tuple[str, int], Beating] = {}
        self._registered = asyncio.Event()
        # One queue per stream: beats queued for a stream that broke are not replayed into the
        # next, and ending a stream's queue (None) ends its request generator.
        self._outgoing: asyncio.Queue[pb.HeartbeatRequest | None] = asyncio.Queue()
        # Beats taken since the loop last turned: they go out together, in one message.
        self._gathered: list[pb.JobBeat] = []
        self._gathered_from: list[tuple[Beating, float]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_open(), name="heartbeat-stream"),
            asyncio.create_task(self._tick(), name="heartbeat-ticker"),
            asyncio.create_task(self._watch(), name="heartbeat-fence"),
        ]

    async def stop(self, grace_seconds: float = 1.0) -> None:
        """End the stream cleanly (a half-close, answered by the service), so that it is not
        taken for a dead worker's; cut it after `grace_seconds` if that does not happen."""
        self._closing = True
        self._outgoing.put_nowait(None)
        keeper = self._tasks[0] if self._tasks else None
        if keeper is not None:
            await asyncio.wait([keeper], timeout=grace_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def register(
        self,
        job_id: str,
        lease: int,
        on_action: Callable[[int], None],
        on_fenced: Callable[[float], None] | None = None,
    ) -> Beating:
        """Beat for this job from now on, the first time one interval after its claim."""
        entry = Beating(job_id, lease, on_action, on_fenced=on_fenced)
        now = asyncio.get_running_loop().time()
        entry.due = now + self._interval
        entry.acked = now
        if not self._jobs:
            self._registered.set()
        self._jobs[(job_id, lease)] = entry
        return entry

    def unregister(self, entry: Beating) -> None:
        self._jobs.pop((entry.job_id, entry.lease), None)

    def beat_now(
        self, entry: Beating, stage: str | None = None, progress: float | None = None
    ) -> None:
        """Send this job's beat at once (a stage change), rather than when it falls due."""
        if stage is not None:
            entry.stage = stage
        if progress is not None:
            entry.progress = progress
        key = (entry.job_id, entry.lease)
        if key in self._jobs:
            now = asyncio.get_running_loop().time()
            self._take(key, entry, now)
            self._take_due(now)

    def _take_due(self, now: float) -> None:
        """Take the beat of every job falling due within the window (see the module)."""
        horizon = now + self._interval * GATHER_SHARE
        # In the order their beats fall due: the scan stops at the first one beyond the window.
        due = list(itertools.takewhile(lambda item: item[1].due <= horizon, self._jobs.items()))
        for key, entry in due:
            self._take(key, entry, now)

    def _take(self, key: tuple[str, int], entry: Beating, now: float) -> None:
        """Take this job's beat now, to go out when the loop next turns; its next falls due one
        interval later."""
        if not self._gathered:
            asyncio.get_running_loop().call_soon(self._send_gathered)
        self._gathered.append(entry.beat())
        self._gathered_from.append((entry, now))
        entry.due = now + self._interval
        del self._jobs[key]
        self._jobs[key] = entry

    def _send_gathered(self) -> None:
        gathered, self._gathered = self._gathered, []
        sent, self._gathered_from = self._gathered_from, []
        generation = self._generation
        for entry, taken in sent:
            entry.in_flight.append((generation, taken))
        for request in _requests_of(gathered):
            self._outgoing.put_nowait(request)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._registered.clear()
                await self._registered.wait()
                continue
            first = next(iter(self._jobs.values()))
            wait = first.due - loop.time()
            if wait > 0:
                # Then look again: meanwhile the first job's beat may have gone out with a
                # stage change, or the job ended.
                await asyncio.sleep(wait)
                continue
            self._take_due(loop.time())

    async def _requests(
        self, outgoing: asyncio.Queue[pb.HeartbeatRequest | None], generation: int
    ) -> AsyncIterator[pb.HeartbeatRequest]:
        # A fresh stream starts with a beat for every job, carrying its current stage, so that a
        # reconnect refreshes them all; what piled up during an outage is dropped, not replayed.
        now = asyncio.get_running_loop().time()
        entries = list(self._jobs.values())
        for entry in entries:
            entry.in_flight.append((generation, now))
        for first in _requests_of([entry.beat() for entry in entries]):
            yield first
        while (request := await outgoing.get()) is not None:
            yield request

    async def _keep_open(self) -> None:
        loop = asyncio.get_running_loop()
        delay = RECONNECT_INITIAL_SECONDS
        while not self._closing:
            answered = False
            outgoing: asyncio.Queue[pb.HeartbeatRequest | None] = asyncio.Queue()
            self._outgoing = outgoing
            self._generation += 1
            generation = self._generation
            call = self._client.heartbeats(self._requests(outgoing, generation))
            # Closed by this side before its deadline breaks it: a broken stream looks like a
            # dead worker to the queue service.
            rotated: list[bool] = []
            rotation = loop.call_later(
                max(HEARTBEAT_STREAM_SECONDS - ROTATE_MARGIN_SECONDS, 1.0),
                _rotate,
                outgoing,
                rotated,
            )
            try:
                async for response in call:
                    if not answered:
                        answered = True
                        delay = RECONNECT_INITIAL_SECONDS
                        self.connected.set()
                    self._dispatch(response, generation)
                if self._closing:
                    return
                if rotated:
                    continue  # reopened at once: its first message beats every job
                log.info("worker_id=%s heartbeat stream ended; reopening", self._worker_id)
            except grpc.aio.AioRpcError as error:
                self.connected.clear()
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    # The stream's own deadline: reopen at once.
                    continue
                log.warning(
                    "worker_id=%s heartbeat stream broke (%s); reconnecting in %.1fs",
                    self._worker_id,
                    rpc.describe(error),
                    delay,
                )
            finally:
                rotation.cancel()
                call.cancel()
                # Cancelling a call that has already ended does not stop its request generator,
                # which would otherwise wait on this queue for ever.
                outgoing.put_nowait(None)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _dispatch(self, response: pb.HeartbeatResponse, generation: int) -> None:
        if not response.beats:  # the answer to a single beat
            self._answered(
                response.job_id, response.lease, response.action, response.message, generation
            )
        for answer in response.beats:
            self._answered(answer.job_id, answer.lease, answer.action, answer.message, generation)

    def _answered(
        self, job_id: str, lease: int, action: int, message: str, generation: int
    ) -> None:
        entry = self._jobs.get((job_id, lease))
        if entry is None:
            return  # The job finished while its beat was in flight.
        in_flight = entry.in_flight
        # Beats of earlier streams went down with them: never answered.
        while in_flight and in_flight[0][0] < generation:
            in_flight.popleft()
        if not in_flight:
            return
        _, taken = in_flight.popleft()
        if action in UNACKNOWLEDGED:
            if not entry.refused_logged:
                entry.refused_logged = True
                log.warning(
                    "worker_id=%s job_id=%s: the queue service refused a heartbeat (%s); the job "
                    "runs on, but beats like this one do not keep it alive",
                    self._worker_id,
                    job_id,
                    message or f"action {action}",
                )
            return
        if taken > entry.acked:
            entry.acked = taken
        if action in (pb.HEARTBEAT_ACTION_CANCEL, pb.HEARTBEAT_ACTION_LEASE_LOST):
            try:
                entry.on_action(action)
            except Exception:
                # One job's handler must not take the stream (and every other job) down.
                log.exception(
                    "worker_id=%s job_id=%s: heartbeat answer handler failed",
                    self._worker_id,
                    entry.job_id,
                )

    async def _watch(self) -> None:
        """Stop each job whose beats went unacknowledged for the timeout (see the module)."""
        loop = asyncio.get_running_loop()
        timeout = self._timeout
        while True:
            if not self._jobs:
                self._registered.clear()
                await self._registered.wait()
                continue
            # An entry registered later has a later deadline than every one here: sleeping
            # until the earliest of these misses none.
            earliest = min(entry.acked for entry in self._jobs.values()) + timeout
            wait = earliest - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop.time()
            for key, entry in list(self._jobs.items()):
                silent = now - entry.acked
                if silent >= timeout:
                    del self._jobs[key]  # no more beats: the job is stopping
                    if entry.on_fenced is not None:
                        self._fence(entry, silent)

    def _fence(self, entry: Beating, silent: float) -> None:
        assert entry.on_fenced is not None
        try:
            entry.on_fenced(silent)
        except Exception:
            log.exception(
                "worker_id=%s job_id=%s: stopping an unacknowledged job failed",
                self._worker_id,
                entry.job_id,
            )


def _rotate(outgoing: asyncio.Queue[pb.HeartbeatRequest | None], rotated: list[bool]) -> None:
    """End a stream's requests before its deadline (the service answers them, then ends it)."""
    rotated.append(True)
    outgoing.put_nowait(None)


def _requests_of(beats: list[pb.JobBeat]) -> list[pb.HeartbeatRequest]:
    """Beats as few messages as the service takes."""
    return [
        pb.HeartbeatRequest(beats=beats[start : start + MAX_BEATS])
        for start in range(0, len(beats), MAX_BEATS)
    ]
