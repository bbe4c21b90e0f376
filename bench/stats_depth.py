"""GetQueueStats and ListRunningJobs at depth: how long they take with N jobs in the table.

    python bench/stats_depth.py [--rows 300000] [--calls 50] [--admin-url postgresql://...]

Makes a fresh database (dropped afterwards), applies the migrations, fills it with `--rows` jobs
(mostly finished, as a queue that has run for a while: 94% SUCCEEDED, 3% FAILED, 2% CANCELLED,
and 1,000 each of QUEUED, RETRY and RUNNING per 300,000), analyzes it, starts the queue service
in process and times each call over a real loopback gRPC channel. Prints the median and p95 in
milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
from psycopg import sql

from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import admin_service_pb2_grpc
from queue_service import migrate
from queue_service.config import Config
from queue_service.server import build

FILL = """
INSERT INTO ingestion_jobs (queue, status, input, idempotency_key, attempts, locked_at,
                            locked_by, last_heartbeat_at, completed_at, created_at, run_after)
SELECT CASE WHEN g %% 10 = 0 THEN 'other' ELSE 'default' END,
       s.status,
       jsonb_build_object('source_type', 's3', 's3_key', 'videos/' || g || '.mp4'),
       'bench-' || g,
       CASE WHEN s.status IN ('QUEUED') THEN 0 ELSE 1 END,
       CASE WHEN s.status = 'RUNNING' THEN now() END,
       CASE WHEN s.status = 'RUNNING' THEN 'bench-worker' END,
       CASE WHEN s.status = 'RUNNING' THEN now() END,
       CASE WHEN s.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED') THEN now() END,
       now() - make_interval(secs => %(rows)s - g),
       now() - make_interval(secs => %(rows)s - g)
FROM generate_series(1, %(rows)s) g
CROSS JOIN LATERAL (
    SELECT CASE WHEN g %% 100 < 94 THEN 'SUCCEEDED'
                WHEN g %% 100 < 97 THEN 'FAILED'
                WHEN g %% 100 < 99 THEN 'CANCELLED'
                WHEN g / 100 %% 3 = 0 THEN 'RUNNING'
                WHEN g / 100 %% 3 = 1 THEN 'RETRY'
                ELSE 'QUEUED' END AS status
) s
"""


def url_for(admin_url: str, database: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{database}"))


async def timed(call: object, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return times


def summary(name: str, times: list[float]) -> str:
    p95 = statistics.quantiles(times, n=20)[-1]
    return f"{name}: median {statistics.median(times):.2f} ms, p95 {p95:.2f} ms"


async def measure(url: str, calls: int) -> None:
    config = Config(database_url=url, listen="127.0.0.1:0", stale_sweep_interval_seconds=0)
    service = await build(config)
    await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            stats = await admin.GetQueueStats(admin_pb.GetQueueStatsRequest())
            print(f"total {stats.total}: {dict(stats.by_status)}")
            for name, call in (
                ("GetQueueStats", lambda: admin.GetQueueStats(admin_pb.GetQueueStatsRequest())),
                (
                    "GetQueueStats(queue=other)",
                    lambda: admin.GetQueueStats(admin_pb.GetQueueStatsRequest(queue="other")),
                ),
                (
                    "ListRunningJobs",
                    lambda: admin.ListRunningJobs(admin_pb.ListRunningJobsRequest()),
                ),
            ):
                await call()  # warm
                print(summary(name, await timed(call, calls)))
    finally:
        await service.stop(grace=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = f"jq_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = url_for(args.admin_url, name)
    try:
        asyncio.run(migrate.apply_async(url))
        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            conn.execute(FILL, {"rows": args.rows})
            conn.execute("VACUUM ANALYZE ingestion_jobs")
            print(f"filled {args.rows} rows in {time.perf_counter() - start:.1f} s")
        asyncio.run(measure(url, args.calls))
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


if __name__ == "__main__":
    main()
