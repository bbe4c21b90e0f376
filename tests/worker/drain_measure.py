"""How fast one real worker process drains a backlog of no-op jobs: a measurement, not a test.

    .venv/bin/python -m tests.worker.drain_measure --worker base=/tmp/worker-base \
        --worker new=. --concurrency 10,200 --rounds 2

Each run gets a fresh database (a copy of one migrated template), its own `python -m
queue_service`, N jobs enqueued with EnqueueJobs (1,000 a call), then `python -m worker_service
--concurrency C --limit N --poll-interval 1` with `WORKER_PIPELINE=bench.noop_pipeline:build` (one
stage that records `started_at`). The rate is N over the time from the first handler start to the
last completion, read back from the rows. The workers named by `--worker LABEL=ROOT` run
alternately, in one session, against the queue service of `--queue-root`, so that the figures
compare as ratios on a shared machine. `--latency N` also trickles N jobs 5 ms apart at an idle
worker and reports enqueue -> handler start. `--profile DIR` samples each worker (and queue
service) with py-spy (`py-spy record --gil --format raw`) and prints its busiest functions.
`--null` puts tests/worker/null_queue.py (no database, every call answered at once) in place of
the queue service: what the worker alone can drain, and its CPU per job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.protobuf import struct_pb2

from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import admin_service_pb2_grpc
from tests.support.databases import create_database, create_template, drop_database, url_for
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
PY_SPY = Path(PYTHON).parent / "py-spy"


@dataclass
class Run:
    label: str
    concurrency: int
    jobs_per_second: float
    wall_seconds: float
    # CPU seconds per 1,000 jobs of the worker process, of the queue service and of the
    # PostgreSQL backends serving the drain's database, over the drain.
    worker_cpu: float
    queue_cpu: float
    latency_ms: list[float]
    database_cpu: float = 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_cpu_seconds(database_url: str) -> float:
    """User + system CPU time so far of the PostgreSQL backends serving this database (the queue
    service's pool: they live as long as it does)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    total = 0.0
    for (pid,) in rows:
        try:
            total += cpu_seconds(pid)
        except OSError:  # ended meanwhile
            continue
    return total


class Child:
    """A process started in `root` (its own code first on sys.path), its output in a file."""

    def __init__(self, args: list[str], root: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = log.open("w")
        self.popen = subprocess.Popen(
            args,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_line(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.popen.args!r}: no {text!r}:\n{self.log.read_text()}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._file.close()


@contextmanager
def queue_service(root: Path, database_url: str, logs: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "QUEUE_LISTEN": f"127.0.0.1:{port}",
        "QUEUE_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "STALE_SWEEP_INTERVAL_SECONDS": "0",
    }
    child = Child([PYTHON, "-m", "queue_service"], root, env, logs / "queue_service.log")
    try:
        child.wait_line("Queue service listening on")
        yield f"127.0.0.1:{port}", child.popen.pid
    finally:
        child.stop()


def job_input(i: int) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update({"source_type": "s3", "s3_key": f"drain/{i}.mp4"})
    return message


async def enqueue(addr: str, first: int, count: int, gap_seconds: float = 0.0) -> dict[str, float]:
    """EnqueueJobs 1,000 a call, or (with a gap) EnqueueJob one at a time; {job id: sent at}."""
    sent: dict[str, float] = {}
    async with grpc.aio.insecure_channel(addr) as channel:
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        if not gap_seconds:
            for start in range(first, first + count, 1000):
                stop = min(start + 1000, first + count)
                request = admin_pb.EnqueueJobsRequest(
                    jobs=[
                        admin_pb.EnqueueJobRequest(input=job_input(i)) for i in range(start, stop)
                    ]
                )
                await admin.EnqueueJobs(request, timeout=60)
            return sent
        t0 = time.monotonic()
        for k in range(count):
            delay = t0 + k * gap_seconds - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            at = time.time()
            answer = await admin.EnqueueJob(
                admin_pb.EnqueueJobRequest(input=job_input(first + k)), timeout=10
            )
            sent[answer.job.id] = at
    return sent


def drained_rate(database_url: str, jobs: int) -> float:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*), min((output->>'started_at')::float8), "
            "max(extract(epoch FROM completed_at))::float8 "
            "FROM ingestion_jobs WHERE status = 'SUCCEEDED'"
        ).fetchone()
    assert row is not None
    done, first_start, last_done = row
    if done != jobs:
        raise SystemExit(f"{done} of {jobs} jobs succeeded")
    return float(jobs / (last_done - first_start))


def start_latencies(database_url: str, sent: dict[str, float]) -> list[float]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id::text, (output->>'started_at')::float8 FROM ingestion_jobs "
            "WHERE status = 'SUCCEEDED' AND id = ANY(%s::uuid[])",
            (list(sent),),
        ).fetchall()
    return sorted((started - sent[job_id]) * 1000 for job_id, started in rows)


def top_functions(raw: Path, count: int = 12) -> tuple[list[str], list[str]]:
    """The functions most often on top of the sampled stacks (own time), and most often anywhere
    in them (inclusive time), with their share of the samples (samples holding the GIL)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        frames = stack.split(";")
        own[frames[-1]] += int(samples)
        for frame in set(frames):
            inclusive[frame] += int(samples)
        total += int(samples)

    def shares(counter: Counter[str]) -> list[str]:
        return [f"{100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(count)]

    return shares(own), shares(inclusive)


def null_run(args: argparse.Namespace, label: str, root: Path, concurrency: int) -> Run:
    logs = args.logs / f"{label}-c{concurrency}-null-{time.strftime('%H%M%S')}"
    logs.mkdir(parents=True)
    port = free_port()
    queue = Child(
        [PYTHON, "-m", "tests.worker.null_queue", str(port), str(args.jobs)],
        ROOT,
        {},
        logs / "null_queue.log",
    )
    try:
        queue.wait_line("Queue service listening on")
        wall, usage = drain(args, label, root, concurrency, f"127.0.0.1:{port}", logs, [])
        queue.wait_line("DRAINED")
        drained = queue.log.read_text().split("DRAINED ", 1)[1].split()
        print(f"  calls {' '.join(drained[1:])}", flush=True)
    finally:
        queue.stop()
    cpu = (usage.ru_utime + usage.ru_stime) * 1000 / args.jobs
    return Run(label, concurrency, args.jobs / float(drained[0]), wall, cpu, 0.0, [])


def worker_env(addr: str) -> dict[str, str]:
    return {
        "QUEUE_ADDR": addr,
        "WORKER_PIPELINE": "bench.noop_pipeline:build",
        "LOG_LEVEL": "WARNING",
    }


def drain(
    args: argparse.Namespace,
    label: str,
    root: Path,
    concurrency: int,
    addr: str,
    logs: Path,
    profiled: list[tuple[str, int]],
) -> tuple[float, Any]:
    """`python -m worker_service --limit N` run to its end (profiled with the processes named in
    `profiled`); its wall time and its resource usage."""
    command = [PYTHON, "-m", "worker_service", "--concurrency", str(concurrency)]
    command += ["--limit", str(args.jobs), "--poll-interval", "1"]
    started = time.monotonic()
    worker = Child(command, root, worker_env(addr), logs / "worker.log")
    profilers = start_profilers(args, label, concurrency, [("", worker.popen.pid), *profiled])
    try:
        _, status, usage = os.wait4(worker.popen.pid, 0)
        wall = time.monotonic() - started
        worker.popen.returncode = code = os.waitstatus_to_exitcode(status)
    finally:
        worker.stop()
        stop_profilers(profilers)
    if code != 0:
        raise SystemExit(f"{label} worker exited {code}:\n{worker.log.read_text()}")
    print(
        f"  worker user {usage.ru_utime:.2f} s, system {usage.ru_stime:.2f} s, context "
        f"switches {usage.ru_nvcsw} + {usage.ru_nivcsw}",
        flush=True,
    )
    return wall, usage


def start_profilers(
    args: argparse.Namespace, label: str, concurrency: int, targets: list[tuple[str, int]]
) -> list[subprocess.Popen[bytes]]:
    profilers = []
    for suffix, pid in targets if args.profile else []:
        raw = args.profile / f"{label}-c{concurrency}{suffix}.txt"
        sampling = ["--nonblocking", "--gil", "--format", "raw", "--rate", "250", "-o", str(raw)]
        profilers.append(
            subprocess.Popen(
                [str(PY_SPY), "record", *sampling, "--pid", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return profilers


def stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        try:
            profiler.wait(30)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait()


def one_run(
    args: argparse.Namespace, label: str, root: Path, concurrency: int, template: str
) -> Run:
    if args.null:
        return null_run(args, label, root, concurrency)
    logs = args.logs / f"{label}-c{concurrency}-{time.strftime('%H%M%S')}"
    logs.mkdir(parents=True)
    database = create_database(template, prefix="jq_drain")
    database_url = url_for(database)
    try:
        with queue_service(args.queue_root, database_url, logs) as (addr, queue_pid):
            asyncio.run(enqueue(addr, 0, args.jobs))
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE ingestion_jobs")
            queue_cpu = cpu_seconds(queue_pid)
            database_cpu = database_cpu_seconds(database_url)
            wall, usage = drain(args, label, root, concurrency, addr, logs, [("-queue", queue_pid)])
            queue_cpu = cpu_seconds(queue_pid) - queue_cpu
            database_cpu = database_cpu_seconds(database_url) - database_cpu
            worker_cpu = usage.ru_utime + usage.ru_stime
            rate = drained_rate(database_url, args.jobs)
            latency: list[float] = []
            if args.latency:
                idle_args = [PYTHON, "-m", "worker_service", "--concurrency", str(concurrency)]
                idle = Child(idle_args, root, worker_env(addr), logs / "idle-worker.log")
                try:
                    idle.wait_line("Worker ready")
                    time.sleep(0.5)
                    sent = asyncio.run(enqueue(addr, args.jobs, args.latency, 0.005))
                    time.sleep(0.5)
                finally:
                    idle.stop()
                latency = start_latencies(database_url, sent)
    finally:
        drop_database(database)
    per_thousand = 1000 / args.jobs
    return Run(
        label,
        concurrency,
        rate,
        wall,
        worker_cpu * per_thousand,
        queue_cpu * per_thousand,
        latency,
        database_cpu * per_thousand,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="append", required=True, help="LABEL=ROOT")
    parser.add_argument("--queue-root", type=Path, default=ROOT)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", default="10,200")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--latency", type=int, default=0, metavar="N")
    parser.add_argument("--profile", type=Path, metavar="DIR")
    parser.add_argument("--top", type=int, default=15, help="functions shown per profile")
    parser.add_argument("--null", action="store_true", help="a queue service that answers at once")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/drain-measure"))
    args = parser.parse_args()
    workers = [
        (label, Path(root).resolve()) for label, _, root in (w.partition("=") for w in args.worker)
    ]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.logs, ignore_errors=True)
    template = create_template()
    runs: list[Run] = []
    try:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for round_ in range(args.rounds):
                order = workers if round_ % 2 == 0 else workers[::-1]
                for label, root in order:
                    run = one_run(args, label, root, concurrency, template)
                    runs.append(run)
                    print(
                        f"c={concurrency:<4} {label:<8} {run.jobs_per_second:9.0f} jobs/s "
                        f"(process {run.wall_seconds:.1f} s; CPU s per 1,000 jobs: worker "
                        f"{run.worker_cpu:.2f}, queue service {run.queue_cpu:.2f}, "
                        f"PostgreSQL {run.database_cpu:.2f})",
                        flush=True,
                    )
    finally:
        drop_database(template)
    print("\nbest of rounds:")
    for concurrency in sorted({run.concurrency for run in runs}):
        for label, _root in workers:
            mine = [r for r in runs if r.label == label and r.concurrency == concurrency]
            best = max(r.jobs_per_second for r in mine)
            line = f"c={concurrency:<4} {label:<8} {best:9.0f} jobs/s"
            latencies = [ms for r in mine for ms in r.latency_ms]
            if latencies:
                cuts = statistics.quantiles(latencies, n=100)
                line += f"  start latency p50 {cuts[49]:.1f} ms p99 {cuts[98]:.1f} ms"
            print(line)
    if args.profile:
        for raw in sorted(args.profile.glob("*.txt")):
            own, inclusive = top_functions(raw, args.top)
            print(f"\n{raw.stem}: own time")
            for entry in own:
                print("  " + entry)
            print(f"{raw.stem}: inclusive time")
            for entry in inclusive:
                print("  " + entry)


if __name__ == "__main__":
    main()
