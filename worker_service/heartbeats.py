"""One heartbeat stream per worker process, carrying every job it runs.

Each running job beats every HEARTBEAT_INTERVAL_SECONDS, and at once when its stage changes;
the queue service answers each beat with CONTINUE, CANCEL or LEASE_LOST, and the answer is
handed to the job that sent it. A job whose worker stops beating (a crash, a paused process) is
released after the service's HEARTBEAT_TIMEOUT_SECONDS and retried elsewhere, which is why the
interval must stay well under that timeout.

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


@dataclass
class Beating:
    """One job's entry in the stream: what its next beat says, and who hears the answer."""

    job_id: str
    lease: int
    on_action: Callable[[int], None]
    stage: str = ""
    # Written by the stage thread (a float assignment is atomic under the GIL), read by the ticker.
    progress: float = 0.0

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
        self._jobs: dict[tuple[str, int], Beating] = {}
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
        entry = Beating(job_id=job_id, lease=lease, on_action=on_action)
        self._jobs[(job_id, lease)] = entry
        return entry

    def unregister(self, entry: Beating) -> None:
        self._jobs.pop((entry.job_id, entry.lease), None)

    def beat_now(
        self, entry: Beating, stage: str | None = None, progress: float | None = None
    ) -> None:
        """Send this job's beat at once (a stage change), rather than at the next tick."""
        if stage is not None:
            entry.stage = stage
        if progress is not None:
            entry.progress = progress
        if (entry.job_id, entry.lease) in self._jobs:
            self._outgoing.put_nowait(entry.request())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            for entry in list(self._jobs.values()):
                self._outgoing.put_nowait(entry.request())

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
