"""What an idle moment costs each hop: one call back to back against one every few ms.

    .venv/bin/python bench/idle_wakeup.py [--calls 400] [--gap-ms 5] [--root OTHER_CHECKOUT]

Starts `python -m queue_service` (of this checkout, or of --root) on a fresh database, then
times gRPC health checks and single EnqueueJob calls against it, and `SELECT 1` on a psycopg
connection, first back to back, then `--gap-ms` apart (what the peer benchmark's trickle of
enqueues does). On this 2-core virtual machine a process that slept
a few milliseconds answers later than one that was busy; every hop of the enqueue → start path
(client, queue service, PostgreSQL, listener, worker, stage thread) pays it once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import psycopg
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import add_root_argument, stack
from jobqueue.v1 import admin_service_pb2, admin_service_pb2_grpc


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples[len(samples) // 10 :]) * 1000


async def timed_calls(
    target: str, calls: int, gap: float, call: Callable[[grpc.aio.Channel], Awaitable[object]]
) -> float:
    """The median time of `calls` calls made by `call` on one channel, `gap` seconds apart."""
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        samples = []
        for _ in range(calls):
            if gap:
                await asyncio.sleep(gap)
            started = time.perf_counter()
            await call(channel)
            samples.append(time.perf_counter() - started)
    return median_ms(samples)


def health_check(channel: grpc.aio.Channel) -> Awaitable[object]:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())


def enqueue(channel: grpc.aio.Channel) -> Awaitable[object]:
    job_input = struct_pb2.Struct()
    job_input.update({"source_type": "s3", "s3_key": f"idle/{uuid.uuid4().hex}.mp4"})
    stub = admin_service_pb2_grpc.AdminServiceStub(channel)
    return stub.EnqueueJob(admin_service_pb2.EnqueueJobRequest(input=job_input))


def selects(url: str, calls: int, gap: float) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        samples = []
        for _ in range(calls):
            if gap:
                time.sleep(gap)
            started = time.perf_counter()
            conn.execute("SELECT 1")
            samples.append(time.perf_counter() - started)
    return median_ms(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    add_root_argument(parser)
    args = parser.parse_args()
    with stack(args.root) as running:
        gap = args.gap_ms / 1000
        target = running.target
        for name, measure in (
            (
                "gRPC health check",
                lambda g: asyncio.run(timed_calls(target, args.calls, g, health_check)),
            ),
            ("EnqueueJob", lambda g: asyncio.run(timed_calls(target, args.calls, g, enqueue))),
            ("psycopg SELECT 1", lambda g: selects(running.url, args.calls, g)),
        ):
            together, apart = measure(0.0), measure(gap)
            print(
                f"{name}: p50 {together:.3f} ms back to back, {apart:.3f} ms "
                f"{args.gap_ms:g} ms apart ({apart / together:.2f}x)"
            )


if __name__ == "__main__":
    main()
