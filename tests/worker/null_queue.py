"""A queue service that answers at once, to measure the worker alone (see drain_measure.py).

    python -m tests.worker.null_queue PORT JOBS

Serves the worker's calls over real gRPC with no database: Claim hands out up to `max_jobs` of
JOBS ready-made jobs (never waiting: an empty answer when they are gone), CompleteBatch /
FailBatch / Complete / Fail / Release answer OK, heartbeats answer CONTINUE, GetQueueStats
answers empty (the worker's start-up check). When the last job is completed it prints
`DRAINED <seconds from the first claim>` and the batch calls it saw.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator

import grpc

from jobqueue.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_pb2,
    queue_service_pb2_grpc,
)
from jobqueue.v1 import queue_service_pb2 as pb

Status = job_pb2.JobStatus


class NullQueue(queue_service_pb2_grpc.QueueServiceServicer):
    def __init__(self, jobs: int) -> None:
        self._jobs = jobs
        self._next = 0
        self._completed = 0
        self._first_claim = 0.0
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _job(self, index: int) -> job_pb2.Job:
        job = job_pb2.Job(
            id=str(uuid.UUID(int=index + 1)),
            queue="default",
            status=Status.JOB_STATUS_RUNNING,
            attempts=1,
            max_attempts=5,
            lease=1,
            stage="claimed",
        )
        job.input.update({"source_type": "s3", "s3_key": f"drain/{index}.mp4"})
        return job

    async def Claim(
        self, request: pb.ClaimRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClaimResponse:
        self._count("Claim")
        if not self._first_claim:
            self._first_claim = time.perf_counter()
        first = self._next
        self._next = min(self._jobs, first + request.max_jobs)
        return pb.ClaimResponse(jobs=[self._job(i) for i in range(first, self._next)])

    def _done(self, count: int) -> None:
        self._completed += count
        if self._completed >= self._jobs:
            seconds = time.perf_counter() - self._first_claim
            print(f"DRAINED {seconds:.3f} {self.calls}", flush=True)

    async def CompleteBatch(
        self, request: pb.CompleteBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteBatchResponse:
        self._count("CompleteBatch")
        self._done(len(request.entries))
        return pb.CompleteBatchResponse(
            results=[
                pb.EntryResult(
                    job_id=entry.job_id, outcome=pb.OUTCOME_OK, status=Status.JOB_STATUS_SUCCEEDED
                )
                for entry in request.entries
            ]
        )

    async def Complete(
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteResponse:
        self._count("Complete")
        self._done(1)
        return pb.CompleteResponse(
            job=job_pb2.Job(
                id=request.job_id, lease=request.lease, status=Status.JOB_STATUS_SUCCEEDED
            )
        )

    async def Heartbeat(
        self,
        request_iterator: AsyncIterator[pb.HeartbeatRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.HeartbeatResponse]:
        async for request in request_iterator:
            self._count("Heartbeat")
            if not request.beats:
                yield pb.HeartbeatResponse(
                    job_id=request.job_id, lease=request.lease, action=pb.HEARTBEAT_ACTION_CONTINUE
                )
                continue
            response = pb.HeartbeatResponse()
            for beat in request.beats:
                response.beats.add(
                    job_id=beat.job_id, lease=beat.lease, action=pb.HEARTBEAT_ACTION_CONTINUE
                )
            yield response


class NullAdmin(admin_service_pb2_grpc.AdminServiceServicer):
    async def GetQueueStats(
        self, request: admin_service_pb2.GetQueueStatsRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.QueueStats:
        return admin_service_pb2.QueueStats()


async def serve(port: int, jobs: int) -> None:
    server = grpc.aio.server()
    queue_service_pb2_grpc.add_QueueServiceServicer_to_server(NullQueue(jobs), server)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(NullAdmin(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("Queue service listening on", port, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
