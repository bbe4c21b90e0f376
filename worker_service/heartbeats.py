"""One heartbeat stream per worker process, carrying every job it holds.

Each job the worker holds (running, or claimed ahead and waiting for a slot) beats once every
HEARTBEAT_INTERVAL_SECONDS counted from its claim, so a job that ends within one interval costs
no beat at all; a stage change is sent at once when the job run asks for it (`beat_now`). The
queue service answers each beat with CONTINUE, CANCEL or LEASE_LOST, and the answer is handed to
the job that sent it. A job whose worker stops beating (a crash, a paused process) is released
after the service's HEARTBEAT_TIMEOUT_SECONDS and retried elsewhere, which is why the interval
must stay well under that timeout.

When the stream breaks (the queue service restarted, the network blinked) it is reopened with
capped exponential backoff. Leases are not touched: jobs keep running, their next beats go out
on the new stream, and as long as that happens within the timeout nothing was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from jobqueue import rpc
from jobqueue.v1 import queue_service_pb2 as pb
from worker_service.client import QueueCalls

log = logging.getLogger(__name__)

RECONNECT_INITIAL_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
# Beats falling due within this share of an interval of each other go out together, so that the
# ticker wakes a few times an interval however many jobs there are (a beat may go out that much
# early, never late).
GATHER_SHARE = 0.1


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

    def request(self) -> pb.HeartbeatRequest:
        return pb.HeartbeatRequest(
            job_id=self.job_id,
            lease=self.lease,
            stage=self.stage,
            progress=min(1.0, max(0.0, self.progress)),
        )


class HeartbeatStream:
    def __init__(self, client: QueueCalls, interval_seconds: float, worker_id: str) -> None:
        self._client = client
        self._interval = interval_seconds
        self._worker_id = worker_id
        # In the order their beats fall due: each beat moves its entry to the end.
        self._jobs: dict[tuple[str, int], Beating] = {}
        self._registered = asyncio.Event()
        # One queue per stream: beats queued for a stream that broke are not replayed into the
        # next, and ending a stream's queue (None) ends its request generator.
        self._outgoing: asyncio.Queue[pb.HeartbeatRequest | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_open(), name="heartbeat-stream"),
            asyncio.create_task(self._tick(), name="heartbeat-ticker"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def register(self, job_id: str, lease: int, on_action: Callable[[int], None]) -> Beating:
        """Beat for this job from now on, the first time one interval after its claim."""
        entry = Beating(job_id, lease, on_action)
        entry.due = asyncio.get_running_loop().time() + self._interval
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
            self._send(key, entry, asyncio.get_running_loop().time())

    def _send(self, key: tuple[str, int], entry: Beating, now: float) -> None:
        self._outgoing.put_nowait(entry.request())
        entry.due = now + self._interval
        del self._jobs[key]
        self._jobs[key] = entry

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        gather = self._interval * GATHER_SHARE
        while True:
            if not self._jobs:
                self._registered.clear()
                await self._registered.wait()
                continue
            first = next(iter(self._jobs.values()))
            wait = first.due - gather - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop.time()
            due = []
            for key, entry in self._jobs.items():
                if entry.due - gather > now:
                    break
                due.append((key, entry))
            for key, entry in due:
                self._send(key, entry, now)

    async def _requests(
        self, outgoing: asyncio.Queue[pb.HeartbeatRequest | None]
    ) -> AsyncIterator[pb.HeartbeatRequest]:
        # A fresh stream starts with a beat for every job, carrying its current stage, so that a
        # reconnect refreshes them all; what piled up during an outage is dropped, not replayed.
        for entry in list(self._jobs.values()):
            yield entry.request()
        while (request := await outgoing.get()) is not None:
            yield request

    async def _keep_open(self) -> None:
        delay = RECONNECT_INITIAL_SECONDS
        while True:
            answered = False
            outgoing: asyncio.Queue[pb.HeartbeatRequest | None] = asyncio.Queue()
            self._outgoing = outgoing
            call = self._client.heartbeats(self._requests(outgoing))
            try:
                async for response in call:
                    if not answered:
                        answered = True
                        delay = RECONNECT_INITIAL_SECONDS
                        self.connected.set()
                    self._dispatch(response)
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
                call.cancel()
                # Cancelling a call that has already ended does not stop its request generator,
                # which would otherwise wait on this queue for ever.
                outgoing.put_nowait(None)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _dispatch(self, response: pb.HeartbeatResponse) -> None:
        entry = self._jobs.get((response.job_id, response.lease))
        if entry is None:
            return  # The job finished while its beat was in flight.
        if response.action in (pb.HEARTBEAT_ACTION_CANCEL, pb.HEARTBEAT_ACTION_LEASE_LOST):
            try:
                entry.on_action(response.action)
            except Exception:
                # One job's handler must not take the stream (and every other job) down.
                log.exception(
                    "worker_id=%s job_id=%s: heartbeat answer handler failed",
                    self._worker_id,
                    entry.job_id,
                )
