"""Where a drain's CPU goes: the worker, the queue service and PostgreSQL, per job.

    .venv/bin/python bench/drain_cpu.py [--jobs 30000] [--concurrency 10] [--root OTHER_CHECKOUT]

Starts `python -m queue_service` (of this checkout, or of --root) on a fresh database, enqueues
--jobs no-op jobs in batches of 1,000, then starts `python -m worker_service` with
bench/noop_pipeline.py and waits until every job has succeeded. It prints the drain's rate (from
the first handler start, as bench/peers.py counts it) and the CPU time (user + system, from
/proc) that each side spent per job while the worker ran: the worker process (its start-up
included), the queue service, and every PostgreSQL process of the server (so run it on a quiet
machine: other databases' work would be counted too).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import add_root_argument, cpu_seconds, postgres_cpu_seconds, stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=10)
    add_root_argument(parser)
    args = parser.parse_args()
    with stack(args.root) as running:
        running.client(
            "enqueue",
            "--mode",
            "bulk",
            "--count",
            str(args.jobs),
            "--start",
            "0",
            "--batch",
            "1000",
            timeout=60 + args.jobs / 1000,
        )
        with psycopg.connect(running.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE ingestion_jobs")
            service_before = cpu_seconds(running.service.pid)
            postgres_before = postgres_cpu_seconds()
            spawned = time.time()
            worker = running.start_worker(args.concurrency)
            deadline = time.monotonic() + 60 + args.jobs / 100
            left = "SELECT count(*) FROM ingestion_jobs WHERE status <> 'SUCCEEDED'"
            while (row := conn.execute(left).fetchone()) is not None and row[0]:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the drain did not finish: {row[0]} jobs left")
                time.sleep(0.05)
            done = time.time()
            worker_cpu = cpu_seconds(worker.pid)
            service_cpu = cpu_seconds(running.service.pid) - service_before
            postgres_cpu = postgres_cpu_seconds() - postgres_before
            first = conn.execute(
                "SELECT min((output->>'started_at')::float8) FROM ingestion_jobs"
            ).fetchone()
    assert first is not None and first[0] is not None
    per_job = 1e6 / args.jobs
    print(
        f"{args.jobs / (done - first[0]):,.0f} jobs/s (worker start-up {first[0] - spawned:.2f} s);"
        f" CPU a job: worker {worker_cpu * per_job:.0f} us, queue service"
        f" {service_cpu * per_job:.0f} us, PostgreSQL {postgres_cpu * per_job:.0f} us"
    )


if __name__ == "__main__":
    main()
