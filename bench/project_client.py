"""This project's side of bench/peers.py: a gRPC client of the queue service, in its own process.

Run by the harness with the project's .venv; prints progress lines and, last, one line
`RESULT {json}`. Every loop is bounded by a count and every call by a deadline.

    enqueue   --mode single|bulk|trickle: N jobs through AdminService.EnqueueJob one call at a
              time, EnqueueJobs in batches, or EnqueueJob calls started --gap-ms apart (the
              start time of each call is reported with the job id, for enqueue -> start latency)
    depth     per-call latency, --samples calls each, one after another: EnqueueJob, then
              Claim(max_jobs=1, wait=0), then one beat of each claimed job on one Heartbeat
              stream (a `beats` list of one, as the worker sends it), then CompleteBatch of one
              entry per job (what the worker sends)
    heartbeat enqueue and claim --jobs jobs, hand them out to --jobs/--per-worker simulated
              workers, each running the worker's own heartbeat stream
              (worker_service.heartbeats.HeartbeatStream, batched `beats`) on a connection of its
              own, every job beating every --interval seconds from the moment it is handed out
              (--claimed together: a worker's jobs all at once, as one Claim gives them;
              apart: each job at a random moment, as long jobs that end at random times leave
              them); prints `WINDOW start` and `WINDOW end` around the --seconds measured (after
              two intervals of warm-up) so the harness can read the queue service's CPU time
              over exactly that window
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobqueue import rpc  # noqa: E402
from jobqueue.v1 import admin_service_pb2 as admin_pb  # noqa: E402
from jobqueue.v1 import admin_service_pb2_grpc, queue_service_pb2_grpc  # noqa: E402
from jobqueue.v1 import queue_service_pb2 as queue_pb  # noqa: E402

DEADLINE = 30.0  # seconds, every unary call


def job_input(i: int) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update({"source_type": "s3", "s3_key": f"bench/{i}.mp4"})
    return message


def batch(first: int, last: int) -> admin_pb.EnqueueJobsRequest:
    return admin_pb.EnqueueJobsRequest(
        jobs=[admin_pb.EnqueueJobRequest(input=job_input(i)) for i in range(first, last)]
    )


def result(payload: dict[str, object]) -> None:
    print("RESULT " + json.dumps(payload), flush=True)


async def enqueue(args: argparse.Namespace) -> None:
    async with grpc.aio.insecure_channel(args.target) as channel:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        await channel.channel_ready()
        calls: list[tuple[str, float]] = []
        existed = 0  # an idempotent hit is cheaper than an insert: it must not be counted
        end = args.start + args.count
        started = time.perf_counter()
        if args.mode == "single":
            for i in range(args.start, end):
                answer = await admin.EnqueueJob(
                    admin_pb.EnqueueJobRequest(input=job_input(i)), timeout=DEADLINE
                )
                existed += answer.already_existed
        elif args.mode == "bulk":
            for first in range(args.start, end, args.batch):
                last = min(first + args.batch, end)
                answers = await admin.EnqueueJobs(batch(first, last), timeout=DEADLINE)
                existed += sum(a.already_existed for a in answers.results)
        else:  # trickle: call k starts at t0 + k * gap (or at once when the previous one ran late)
            gap = args.gap_ms / 1000
            t0 = time.monotonic()
            for k, i in enumerate(range(args.start, end)):
                delay = t0 + k * gap - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                at = time.time()
                answer = await admin.EnqueueJob(
                    admin_pb.EnqueueJobRequest(input=job_input(i)), timeout=DEADLINE
                )
                calls.append((answer.job.id, at))
                existed += answer.already_existed
        seconds = time.perf_counter() - started
        if existed:
            raise SystemExit(f"{existed} of {args.count} jobs already existed (reused inputs)")
    result({"seconds": seconds, "count": args.count, "calls": calls})


async def depth(args: argparse.Namespace) -> None:
    timings: dict[str, list[float]] = {"enqueue": [], "claim": [], "heartbeat": [], "complete": []}
    async with grpc.aio.insecure_channel(args.target) as channel:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        queue = queue_service_pb2_grpc.QueueServiceStub(channel)
        await channel.channel_ready()
        for i in range(args.start, args.start + args.samples):
            started = time.perf_counter()
            answer = await admin.EnqueueJob(
                admin_pb.EnqueueJobRequest(input=job_input(i)), timeout=DEADLINE
            )
            timings["enqueue"].append(time.perf_counter() - started)
            if answer.already_existed:
                raise SystemExit(f"job {i} already existed (reused input)")
        claimed: list[tuple[str, int]] = []
        for _ in range(args.samples):
            started = time.perf_counter()
            answer = await queue.Claim(
                queue_pb.ClaimRequest(worker_id="bench-depth", max_jobs=1), timeout=DEADLINE
            )
            timings["claim"].append(time.perf_counter() - started)
            if len(answer.jobs) != 1:
                raise SystemExit(f"claim returned {len(answer.jobs)} jobs, expected 1")
            claimed.append((answer.jobs[0].id, answer.jobs[0].lease))
        call = queue.Heartbeat(timeout=DEADLINE + args.samples)
        for job_id, lease in claimed:
            started = time.perf_counter()
            await call.write(
                queue_pb.HeartbeatRequest(
                    beats=[queue_pb.JobBeat(job_id=job_id, lease=lease, stage="noop", progress=0.5)]
                )
            )
            reply = await call.read()
            timings["heartbeat"].append(time.perf_counter() - started)
            if reply is grpc.aio.EOF or [b.action for b in reply.beats] != [
                queue_pb.HEARTBEAT_ACTION_CONTINUE
            ]:
                raise SystemExit(f"heartbeat of job {job_id} answered {reply!r}")
        await call.done_writing()
        for job_id, lease in claimed:
            started = time.perf_counter()
            done = await queue.CompleteBatch(
                queue_pb.CompleteBatchRequest(
                    entries=[queue_pb.CompleteRequest(job_id=job_id, lease=lease)]
                ),
                timeout=DEADLINE,
            )
            timings["complete"].append(time.perf_counter() - started)
            if [r.outcome for r in done.results] != [queue_pb.OUTCOME_OK]:
                raise SystemExit(f"complete of job {job_id} answered {done!r}")
    result(timings)


class CountingCall:
    """A Heartbeat call as HeartbeatStream sees it, counting what passes both ways."""

    def __init__(self, counts: dict[str, int], call: Any) -> None:
        self._counts = counts
        self._call = call

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    async def __aiter__(self) -> AsyncIterator[queue_pb.HeartbeatResponse]:
        async for response in self._call:
            self._counts["answers"] += len(response.beats) or 1
            yield response


class HeartbeatOnlyClient:
    """What worker_service.heartbeats.HeartbeatStream uses of the worker's QueueClient:
    `heartbeats`, on a connection of this simulated worker's own."""

    def __init__(self, target: str, counts: dict[str, int]) -> None:
        # A subchannel pool of its own: a TCP connection per worker, as separate hosts have.
        options = [*rpc.CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        self.channel = grpc.aio.insecure_channel(target, options=options)
        self._stub = queue_service_pb2_grpc.QueueServiceStub(self.channel)
        self._counts = counts

    def heartbeats(self, requests: AsyncIterator[queue_pb.HeartbeatRequest]) -> CountingCall:
        counts = self._counts

        async def counted() -> AsyncIterator[queue_pb.HeartbeatRequest]:
            async for request in requests:
                counts["messages"] += 1
                counts["beats"] += len(request.beats) or 1
                yield request

        return CountingCall(counts, self._stub.Heartbeat(counted(), timeout=3600))


async def heartbeat(args: argparse.Namespace) -> None:
    from worker_service.heartbeats import HeartbeatStream

    counts = {"messages": 0, "beats": 0, "answers": 0, "not_continue": 0}
    workers = max(1, args.jobs // args.per_worker)
    clients = [HeartbeatOnlyClient(args.target, counts) for _ in range(workers)]
    streams: list[HeartbeatStream] = []
    try:
        admin = admin_service_pb2_grpc.AdminServiceStub(clients[0].channel)
        queue = queue_service_pb2_grpc.QueueServiceStub(clients[0].channel)
        for first in range(args.start, args.start + args.jobs, 1000):
            last = min(first + 1000, args.start + args.jobs)
            await admin.EnqueueJobs(batch(first, last), timeout=DEADLINE)
        claimed: list[tuple[str, int]] = []
        for _ in range(args.jobs // 1000 + 2):  # bounded: 1000 per claim
            want = min(1000, args.jobs - len(claimed))
            if want <= 0:
                break
            answer = await queue.Claim(
                queue_pb.ClaimRequest(worker_id="bench-heartbeats", max_jobs=want),
                timeout=DEADLINE,
            )
            claimed.extend((job.id, job.lease) for job in answer.jobs)
        if len(claimed) != args.jobs:
            raise SystemExit(f"claimed {len(claimed)} of {args.jobs} jobs")
        print(f"claimed {len(claimed)} jobs for {workers} workers", flush=True)

        def on_action(action: int) -> None:
            counts["not_continue"] += 1

        for k, client in enumerate(clients):
            stream = HeartbeatStream(client, args.interval, f"bench-worker-{k}")  # type: ignore[arg-type]
            stream.start()
            streams.append(stream)
        # Each worker's jobs are handed to its stream at moments spread over one interval
        # (seeded: the same moments in every run); a job beats one interval after that.
        rng = random.Random(10)
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 1.0
        for k, stream in enumerate(streams):
            jobs = claimed[k::workers]
            at = t0 + rng.uniform(0, args.interval)
            for job_id, lease in jobs:
                if args.claimed == "apart":
                    at = t0 + rng.uniform(0, args.interval)
                loop.call_at(at, stream.register, job_id, lease, on_action)
        # Every job has beaten at least once by t0 + 2 intervals: the steady state.
        await asyncio.sleep(max(0.0, t0 + 2 * args.interval - loop.time()))
        start = dict(counts)
        cpu = time.process_time()
        print("WINDOW start", flush=True)
        await asyncio.sleep(args.seconds)
        end = dict(counts)
        cpu = time.process_time() - cpu
        print("WINDOW end", flush=True)
        result(
            {
                "jobs": len(claimed),
                "workers": workers,
                "claimed": args.claimed,
                "window_messages": end["messages"] - start["messages"],
                "window_beats": end["beats"] - start["beats"],
                "sent": end["beats"],
                "answers": end["answers"],
                "not_continue": end["not_continue"],
                # this client's own CPU over the window: it must not be the bottleneck
                "client_cpu_seconds": cpu,
            }
        )
    finally:
        for stream in streams:
            await stream.stop()
        for client in clients:
            await client.channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["enqueue", "depth", "heartbeat"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--mode", choices=["single", "bulk", "trickle"], default="single")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--per-worker", type=int, default=10, help="jobs per simulated worker")
    parser.add_argument("--claimed", choices=["together", "apart"], default="together")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    command = {"enqueue": enqueue, "depth": depth, "heartbeat": heartbeat}[args.command]
    asyncio.run(command(args))


if __name__ == "__main__":
    main()
