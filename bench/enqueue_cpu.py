"""What one EnqueueJob costs: its time, and the queue service's and PostgreSQL's CPU per call.

    .venv/bin/python bench/enqueue_cpu.py [--seconds 10] [--root OTHER_CHECKOUT]

Starts `python -m queue_service` (of this checkout, or of --root) on a fresh database and makes
single EnqueueJob calls back to back from one grpc.aio client in this process for --seconds; it
prints the calls' mean time and the CPU time (user + system, from /proc) that the queue service
and every PostgreSQL process spent per call (run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import add_root_argument, cpu_seconds, postgres_cpu_seconds, stack
from jobqueue.v1 import admin_service_pb2, admin_service_pb2_grpc


async def enqueue_for(target: str, seconds: float) -> int:
    """Single EnqueueJob calls back to back for `seconds`; how many were made."""
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        calls = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            job_input = struct_pb2.Struct()
            job_input.update({"source_type": "s3", "s3_key": f"cpu/{uuid.uuid4().hex}.mp4"})
            request = admin_service_pb2.EnqueueJobRequest(input=job_input)
            await stub.EnqueueJob(request, timeout=30)
            calls += 1
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    add_root_argument(parser)
    args = parser.parse_args()
    with stack(args.root) as running:
        asyncio.run(enqueue_for(running.target, 1.0))  # warm-up
        service, postgres = cpu_seconds(running.service.pid), postgres_cpu_seconds()
        started = time.perf_counter()
        calls = asyncio.run(enqueue_for(running.target, args.seconds))
        elapsed = time.perf_counter() - started
        service = cpu_seconds(running.service.pid) - service
        postgres = postgres_cpu_seconds() - postgres
    per_call = 1e6 / calls
    print(
        f"{calls} EnqueueJob calls, {elapsed / calls * 1000:.3f} ms each; CPU a call: queue "
        f"service {service * per_call:.0f} us, PostgreSQL {postgres * per_call:.0f} us"
    )


if __name__ == "__main__":
    main()
