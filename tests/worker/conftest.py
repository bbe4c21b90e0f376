"""Fixtures for the worker's tests: a real queue service process, real worker processes.

Every worker here is `python -m worker_service` started by its documented command, talking gRPC
to `python -m queue_service` on a loopback port, over a fresh migrated database. The queue
service runs with short timeouts so that stale-job rules play out in seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2

from jobqueue.rpc import bearer_metadata
from jobqueue.v1 import admin_service_pb2, admin_service_pb2_grpc
from tests.support.jobs import fetch_job
from tests.support.processes import Process, queue_service_process, worker_process

# Fast enough that every rule plays out in a few seconds, slow enough to be far from flaky:
# workers beat every 0.3 s against a 3 s heartbeat timeout.
QUEUE_ENV = {
    "HEARTBEAT_TIMEOUT_SECONDS": "3",
    "STALE_SWEEP_INTERVAL_SECONDS": "1",
    # The sweep waits this interval plus margin after the service starts (queue_service/reaper.py).
    "HEARTBEAT_INTERVAL_SECONDS": "0.3",
    "STALE_SWEEP_MARGIN_SECONDS": "0.5",
    "RETRY_BACKOFF_BASE_SECONDS": "0.05",
    "RETRY_BACKOFF_MAX_SECONDS": "0.2",
}
WORKER_ENV = {
    "WORKER_PIPELINE": "tests.worker.pipelines:build_pipeline",
    "HEARTBEAT_INTERVAL_SECONDS": "0.3",
    # The queue service's (QUEUE_ENV): a job unacknowledged this long is stopped by its worker.
    "HEARTBEAT_TIMEOUT_SECONDS": "3",
    "WORKER_SHUTDOWN_GRACE_SECONDS": "5",
    "LOG_LEVEL": "WARNING",
}


@dataclass
class Queue:
    process: Process
    port: int
    token: str | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def admin(self) -> tuple[admin_service_pb2_grpc.AdminServiceStub, Any]:
        channel = grpc.insecure_channel(self.addr)
        return admin_service_pb2_grpc.AdminServiceStub(channel), channel

    def enqueue(self, job_input: dict[str, Any], **fields: Any) -> str:
        """EnqueueJob through the real API, as a producer would; returns the job id."""
        message = struct_pb2.Struct()
        message.update(job_input)
        stub, channel = self.admin()
        with channel:
            response = stub.EnqueueJob(
                admin_service_pb2.EnqueueJobRequest(input=message, **fields),
                timeout=10,
                metadata=bearer_metadata(self.token),
            )
        return str(response.job.id)

    def cancel(self, job_id: str) -> None:
        stub, channel = self.admin()
        with channel:
            stub.CancelJob(
                admin_service_pb2.CancelJobRequest(job_id=job_id),
                timeout=10,
                metadata=bearer_metadata(self.token),
            )


@pytest.fixture
def queue_factory(database_url: str) -> Iterator[Callable[..., Queue]]:
    """Start `python -m queue_service` (env overrides QUEUE_ENV); stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def start(port: int | None = None, **env: str) -> Queue:
            process = stack.enter_context(
                queue_service_process(database_url, port, **{**QUEUE_ENV, **env})
            )
            return Queue(process, process.port, env.get("QUEUE_AUTH_TOKEN"))

        yield start


@pytest.fixture
def queue(queue_factory: Callable[..., Queue]) -> Queue:
    return queue_factory()


@pytest.fixture
def objects(tmp_path: Path) -> Path:
    """The stand-in bucket: s3 keys are paths under it."""
    root = tmp_path / "objects"
    (root / "videos").mkdir(parents=True)
    return root


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def worker_factory(objects: Path, results: Path) -> Iterator[Callable[..., Process]]:
    """Start `python -m worker_service ARGS` against a queue; stopped (SIGTERM) at teardown."""
    with contextlib.ExitStack() as stack:

        def start(queue: Queue | None, *args: str, name: str = "worker", **env: str) -> Process:
            full_env = {
                **WORKER_ENV,
                "TEST_OBJECT_ROOT": str(objects),
                "TEST_RESULTS_DIR": str(results),
                **({"QUEUE_ADDR": queue.addr} if queue else {}),
                **env,
            }
            return stack.enter_context(worker_process(args, full_env, name))

        yield start


def put_object(objects: Path, key: str, data: bytes = b"") -> Path:
    path = objects / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data or (key.encode() * 5000))
    return path


def held_job(queue: Queue, objects: Path, gate: Path, key: str = "videos/held.mp4") -> str:
    """A job that stays RUNNING in `wait_for_gate` until `gate` exists."""
    put_object(objects, key)
    return queue.enqueue({"source_type": "s3", "s3_key": key, "gate": str(gate)})


def at_gate(db: psycopg.Connection[Any], job_id: str, lease: int = 1) -> bool:
    """Whether the held job runs under `lease`, waiting at its gate."""
    row = fetch_job(db, job_id)
    return row["status"] == "RUNNING" and row["lease"] == lease and row["stage"] == "wait_for_gate"
