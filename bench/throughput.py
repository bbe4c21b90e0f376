"""Queue throughput through the real gRPC service and PostgreSQL.

Starts `python -m queue_service` as its own process on a fresh database (so client and server do
not share an interpreter), then measures, each for a fixed number of jobs:

  enqueue        EnqueueJobs in batches of 500
  batched        workers that Claim up to 100 jobs and finish them with one CompleteBatch
  single         workers that Claim 1 job and Complete it (the simplest client; the service
                 coalesces concurrent Completes into shared statements)
  heartbeats     one Heartbeat stream per worker, beating for every running job

    .venv/bin/python bench/throughput.py [--jobs 20000] [--workers 8] [--out bench/RESULTS.md]

It prints a Markdown table; with --out it also writes it, with the machine and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobqueue.v1 import admin_service_pb2 as admin_pb  # noqa: E402
from jobqueue.v1 import admin_service_pb2_grpc, queue_service_pb2_grpc  # noqa: E402
from jobqueue.v1 import queue_service_pb2 as queue_pb  # noqa: E402
from tests.support.databases import create_database, create_template, drop_database, url_for  # noqa: E402
from tests.support.processes import free_port, queue_service_process  # noqa: E402


def payload(i: int) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update({"source_type": "s3", "s3_key": f"videos/bench-{i}.mp4"})
    return message


async def enqueue_all(
    admin: admin_service_pb2_grpc.AdminServiceStub, start: int, count: int
) -> None:
    for offset in range(0, count, 500):
        size = min(500, count - offset)
        await admin.EnqueueJobs(
            admin_pb.EnqueueJobsRequest(
                jobs=[
                    admin_pb.EnqueueJobRequest(input=payload(start + offset + i))
                    for i in range(size)
                ]
            )
        )


async def batched_worker(target: str, name: str, done: list[int]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        while True:
            jobs = (await stub.Claim(queue_pb.ClaimRequest(worker_id=name, max_jobs=100))).jobs
            if not jobs:
                return
            await stub.CompleteBatch(
                queue_pb.CompleteBatchRequest(
                    entries=[queue_pb.CompleteRequest(job_id=j.id, lease=j.lease) for j in jobs]
                )
            )
            done.append(len(jobs))


async def single_worker(target: str, name: str, done: list[int]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        while True:
            jobs = (await stub.Claim(queue_pb.ClaimRequest(worker_id=name, max_jobs=1))).jobs
            if not jobs:
                return
            await stub.Complete(queue_pb.CompleteRequest(job_id=jobs[0].id, lease=jobs[0].lease))
            done.append(1)


async def heartbeat_worker(target: str, name: str, rounds: int, done: list[int]) -> None:
    """Claims 50 jobs, then beats for all of them `rounds` times over one stream."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = queue_service_pb2_grpc.QueueServiceStub(channel)
        jobs = (await stub.Claim(queue_pb.ClaimRequest(worker_id=name, max_jobs=50))).jobs
        call = stub.Heartbeat()
        for round_ in range(rounds):
            for job in jobs:
                await call.write(
                    queue_pb.HeartbeatRequest(
                        job_id=job.id,
                        lease=job.lease,
                        stage="transcription",
                        progress=round_ / rounds,
                    )
                )
            for _ in jobs:
                answer = await call.read()
                assert answer.action == queue_pb.HEARTBEAT_ACTION_CONTINUE
            done.append(len(jobs))
        await call.done_writing()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc), to attribute cost to the server."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Result = tuple[str, int, float, float]  # scenario, items, wall seconds, server CPU seconds


async def measure(target: str, jobs: int, workers: int, server_pid: int) -> list[Result]:
    results: list[Result] = []

    async def timed(run: Callable[[], Awaitable[object]]) -> tuple[float, float]:
        cpu, started = cpu_seconds(server_pid), time.perf_counter()
        await run()
        return time.perf_counter() - started, cpu_seconds(server_pid) - cpu

    async with grpc.aio.insecure_channel(target) as channel:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)

        seconds, cpu = await timed(lambda: enqueue_all(admin, 0, jobs))
        results.append(("enqueue (EnqueueJobs x500)", jobs, seconds, cpu))

        done: list[int] = []
        seconds, cpu = await timed(
            lambda: asyncio.gather(*(batched_worker(target, f"b{i}", done) for i in range(workers)))
        )
        assert sum(done) == jobs, (sum(done), jobs)
        results.append(
            (f"claim+complete, batched ({workers} workers, 100/claim)", jobs, seconds, cpu)
        )

        single_jobs = max(jobs // 4, 1000)
        await enqueue_all(admin, jobs, single_jobs)
        done = []
        seconds, cpu = await timed(
            lambda: asyncio.gather(*(single_worker(target, f"s{i}", done) for i in range(workers)))
        )
        assert sum(done) == single_jobs
        results.append(
            (f"claim+complete, one job per call ({workers} workers)", single_jobs, seconds, cpu)
        )

        await enqueue_all(admin, jobs + single_jobs, workers * 50)
        rounds = 20
        done = []
        seconds, cpu = await timed(
            lambda: asyncio.gather(
                *(heartbeat_worker(target, f"h{i}", rounds, done) for i in range(workers))
            )
        )
        results.append((f"heartbeats ({workers} streams x 50 jobs)", sum(done), seconds, cpu))
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | items | seconds | items/s | queue-service CPU per item |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, count, seconds, cpu in results:
        lines.append(
            f"| {name} | {count} | {seconds:.2f} | {count / seconds:,.0f} "
            f"| {cpu / count * 1e6:,.0f} µs |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1, help="repeat and report the median run")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    runs: list[list[Result]] = []
    template = create_template()
    try:
        for _ in range(args.runs):
            database = create_database(template=template, prefix="jq_bench")
            try:
                port = free_port()
                with queue_service_process(url_for(database), port, LOG_LEVEL="WARNING") as service:
                    target = f"127.0.0.1:{port}"
                    pid = service.popen.pid
                    runs.append(asyncio.run(measure(target, args.jobs, args.workers, pid)))
            finally:
                drop_database(database)
    finally:
        drop_database(template)

    median = [
        (
            name,
            count,
            statistics.median(run[i][2] for run in runs),
            statistics.median(run[i][3] for run in runs),
        )
        for i, (name, count, _, _) in enumerate(runs[0])
    ]
    report = table(median)
    print(report)
    if args.out:
        command = (
            f"python bench/throughput.py --jobs {args.jobs} --workers {args.workers} "
            f"--runs {args.runs}"
        )
        header = (
            f"# Queue throughput\n\n`{command}` on {platform.platform()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}. Queue service and benchmark client are separate "
            "processes on one machine with the PostgreSQL server. Median of "
            f"{args.runs} run(s).\n\n"
        )
        args.out.write_text(header + report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
