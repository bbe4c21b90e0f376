"""This project's side of bench/peers.py: a gRPC client of the queue service, in its own process.

Run by the harness with the project's .venv; prints progress lines and, last, one line
`RESULT {json}`. Every loop is bounded by a count and every call by a deadline.

    enqueue   --mode single|bulk|trickle: N jobs through AdminService.EnqueueJob one call at a
              time, EnqueueJobs in batches, or EnqueueJob calls started --gap-ms apart (the
              start time of each call is reported with the job id, for enqueue -> start latency)
    depth     per-call latency of EnqueueJob and of Claim(max_jobs=1, wait=0) (each claimed job
              is then completed, untimed), --samples calls each
    heartbeat enqueue and claim --jobs jobs, then keep them alive over --streams Heartbeat
              streams, each job beating every --interval seconds; prints `WINDOW start` and
              `WINDOW end` around the --seconds measured (after one interval of warm-up) so the
              harness can read the queue service's CPU time over exactly that window
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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
    enqueue_seconds: list[float] = []
    claim_seconds: list[float] = []
    async with grpc.aio.insecure_channel(args.target) as channel:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        queue = queue_service_pb2_grpc.QueueServiceStub(channel)
        await channel.channel_ready()
        for i in range(args.start, args.start + args.samples):
            started = time.perf_counter()
            answer = await admin.EnqueueJob(
                admin_pb.EnqueueJobRequest(input=job_input(i)), timeout=DEADLINE
            )
            enqueue_seconds.append(time.perf_counter() - started)
            if answer.already_existed:
                raise SystemExit(f"job {i} already existed (reused input)")
        for _ in range(args.samples):
            started = time.perf_counter()
            answer = await queue.Claim(
                queue_pb.ClaimRequest(worker_id="bench-depth", max_jobs=1), timeout=DEADLINE
            )
            claim_seconds.append(time.perf_counter() - started)
            if len(answer.jobs) != 1:
                raise SystemExit(f"claim returned {len(answer.jobs)} jobs, expected 1")
            job = answer.jobs[0]
            await queue.Complete(
                queue_pb.CompleteRequest(job_id=job.id, lease=job.lease), timeout=DEADLINE
            )
    result({"enqueue": enqueue_seconds, "claim": claim_seconds})


async def heartbeat(args: argparse.Namespace) -> None:
    per_channel = 50  # streams sharing one connection, as if one host ran that many workers
    # A connection of its own per channel (no shared subchannel), as separate hosts would have.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(args.target, options=options)
        for _ in range((args.streams + per_channel - 1) // per_channel)
    ]
    try:
        admin = admin_service_pb2_grpc.AdminServiceStub(channels[0])
        queue = queue_service_pb2_grpc.QueueServiceStub(channels[0])
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
        print(f"claimed {len(claimed)} jobs", flush=True)

        tick = 0.1  # each stream sends the beats that fall due in every 100 ms slice
        slices = round(args.interval / tick)
        total_ticks = round((args.interval + args.seconds) / tick) + 1
        sent = [0]
        answers = [0]
        not_continue = [0]
        window_marks: dict[str, float] = {}
        t0 = time.monotonic() + 0.5

        async def stream(index: int, jobs: list[tuple[str, int]]) -> None:
            stub = queue_service_pb2_grpc.QueueServiceStub(channels[index // per_channel])
            call = stub.Heartbeat()

            async def read() -> None:
                async for answer in call:
                    answers[0] += 1
                    if answer.action != queue_pb.HEARTBEAT_ACTION_CONTINUE:
                        not_continue[0] += 1

            reader = asyncio.create_task(read())
            # Spread the stream's jobs over the slices of an interval, and the streams too;
            # the stream wakes only for the slices in which one of its jobs is due.
            slots: dict[int, list[tuple[str, int]]] = {}
            for k, job in enumerate(jobs):
                slots.setdefault((k + index) % slices, []).append(job)
            for n in range(total_ticks):
                due = slots.get(n % slices)
                if not due:
                    continue
                delay = t0 + n * tick - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                for job_id, lease in due:
                    await call.write(
                        queue_pb.HeartbeatRequest(
                            job_id=job_id, lease=lease, stage="noop", progress=0.5
                        )
                    )
                sent[0] += len(due)
            await call.done_writing()
            await asyncio.wait_for(reader, timeout=30)

        async def window() -> None:
            await asyncio.sleep(max(0.0, t0 + args.interval - time.monotonic()))
            window_marks["sent_start"] = sent[0]
            window_marks["cpu_start"] = time.process_time()
            print("WINDOW start", flush=True)
            await asyncio.sleep(args.seconds)
            window_marks["sent_end"] = sent[0]
            window_marks["cpu_end"] = time.process_time()
            print("WINDOW end", flush=True)

        per_stream = [claimed[k :: args.streams] for k in range(args.streams)]
        await asyncio.gather(
            window(), *(stream(k, jobs) for k, jobs in enumerate(per_stream) if jobs)
        )
        result(
            {
                "jobs": len(claimed),
                "streams": args.streams,
                "sent": sent[0],
                "answers": answers[0],
                "not_continue": not_continue[0],
                "window_beats": window_marks["sent_end"] - window_marks["sent_start"],
                # this client's own CPU over the window: it must not be the bottleneck
                "client_cpu_seconds": window_marks["cpu_end"] - window_marks["cpu_start"],
            }
        )
    finally:
        for channel in channels:
            await channel.close()


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
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    command = {"enqueue": enqueue, "depth": depth, "heartbeat": heartbeat}[args.command]
    asyncio.run(command(args))


if __name__ == "__main__":
    main()
