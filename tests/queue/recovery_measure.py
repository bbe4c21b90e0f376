"""How soon the queue service answers again after PostgreSQL comes back: a measurement, not a test.

    .venv/bin/python -m tests.queue.recovery_measure --root . --root main=/tmp/main-copy \
        --outage 20 --rounds 3

Each round starts a throwaway PostgreSQL cluster of its own (Debian's initdb and pg_ctl, a free
port, a folder under /tmp: the shared cluster on 5432 is never touched), a real `python -m
queue_service` from each `--root` (which applies the migrations), and clients that keep calling
through the outage: 4 GetQueueStats callers and 2 Claim callers, each call with a 2 s deadline,
one after another. PostgreSQL is stopped (`pg_ctl stop -m fast`), kept down for `--outage`
seconds, and started again; "back" is the first moment a fresh connection of this script's own
succeeds. The figure is the time from "back" to the first successful GetQueueStats (issue 11,
item 8: ≤ 3 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psycopg

from jobqueue.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
)
from tests.support.processes import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Cluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="jq-recovery-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [PG_BIN / "initdb", "-D", self.dir / "data", "-U", "postgres", "-A", "trust"]
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        data, log = self.dir / "data", self.dir / "log"
        subprocess.run(
            _as_postgres([PG_BIN / "pg_ctl", "-D", data, "-l", log, "-w", "-o", options, "start"]),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([PG_BIN / "pg_ctl", "-D", self.dir / "data", "-m", mode, "-w", "stop"]),
            check=True,
            capture_output=True,
        )

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _as_postgres(command: list[object]) -> list[object]:
    """initdb refuses to run as root: run the cluster's commands as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


async def measure(root: Path, outage: float) -> float:
    cluster = Cluster()
    cluster.start()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": cluster.url,
        "QUEUE_LISTEN": f"127.0.0.1:{port}",
        "STALE_SWEEP_INTERVAL_SECONDS": "0",
        "PYTHONPATH": str(root),
        "LOG_LEVEL": "ERROR",
    }
    service = subprocess.Popen(  # noqa: ASYNC220 (started once, before any call is timed)
        [sys.executable, "-m", "queue_service"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    queue = queue_service_pb2_grpc.QueueServiceStub(channel)
    answered: list[float] = []
    stop = asyncio.Event()

    async def stats_caller() -> None:
        while not stop.is_set():
            try:
                await admin.GetQueueStats(admin_service_pb2.GetQueueStatsRequest(), timeout=2)
                answered.append(time.monotonic())
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)

    async def claim_caller() -> None:
        request = queue_service_pb2.ClaimRequest(worker_id="measure", max_jobs=1)
        while not stop.is_set():
            with contextlib.suppress(grpc.aio.AioRpcError):
                await queue.Claim(request, timeout=2)
            await asyncio.sleep(0.05)

    try:
        deadline = time.monotonic() + 30
        while not answered and time.monotonic() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await admin.GetQueueStats(admin_service_pb2.GetQueueStatsRequest(), timeout=1)
                answered.append(time.monotonic())
            await asyncio.sleep(0.1)
        callers = [asyncio.create_task(stats_caller()) for _ in range(4)]
        callers += [asyncio.create_task(claim_caller()) for _ in range(2)]
        await asyncio.sleep(1)
        await asyncio.to_thread(cluster.stop, "fast")
        await asyncio.sleep(outage)
        await asyncio.to_thread(cluster.start)
        back = await asyncio.to_thread(_first_connection, cluster.url)
        while not [t for t in answered if t >= back]:
            await asyncio.sleep(0.01)
        recovered = min(t for t in answered if t >= back) - back
        stop.set()
        await asyncio.gather(*callers, return_exceptions=True)
        return recovered
    finally:
        await channel.close()
        service.terminate()
        service.wait(10)
        cluster.remove()


def _first_connection(url: str) -> float:
    while True:
        try:
            psycopg.connect(url, connect_timeout=1).close()
            return time.monotonic()
        except psycopg.OperationalError:
            time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", action="append", default=[], help="[LABEL=]PATH of a checkout")
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    roots = [r.split("=", 1) if "=" in r else (r, r) for r in args.root or ["."]]
    figures: dict[str, list[float]] = {label: [] for label, _ in roots}
    for _ in range(args.rounds):
        for label, path in roots:
            seconds = asyncio.run(measure(Path(path).resolve(), args.outage))
            figures[label].append(seconds)
            print(f"{label}: answered {seconds:.2f} s after PostgreSQL was back", flush=True)
    for label, values in figures.items():
        print(
            f"{label}: median {statistics.median(values):.2f} s, "
            f"max {max(values):.2f} s over {len(values)} rounds of a {args.outage:g} s outage"
        )


if __name__ == "__main__":
    main()
