"""The floors under this project's figures: what each piece of its hot path costs at the least.

    .venv/bin/python bench/floors.py [--calls 1000] [--jobs 20000] [--batch 250]

Measures, one after another in one run, on a database of its own:

1. a gRPC hop: one unary call (grpc.aio, the health check of a server that serves nothing else),
   back to back and 5 ms apart: what any call through a gRPC service costs before it does
   anything (every enqueue of this project, and a claim's answer to its worker);
2. a durable enqueue at its leanest: one INSERT of a JSON payload into a table with a primary
   key, announced by a statement trigger's NOTIFY, committed (what PgQueuer's enqueue does),
   against this project's own enqueue statement (sql/queries.sql `enqueue`: an idempotency key
   derived from the input, seven indexes, the announcement; no audit entry, as for a service
   without credentials), and its claim of one job; one job per statement, each committed, on
   one connection; and both enqueues with 1,000 jobs in one statement (microseconds a row);
3. a job's database work when batched (claim of --batch jobs, then their completion), in
   microseconds of the server process's CPU per job: this project's state machine (a claim and
   a completion each update the row in place, and a status change rewrites its entry in every
   index), against the leanest queue table (a primary key and one partial index for the runnable
   jobs; a claim updates, a completion deletes the row, as graphile-worker does).

The peers' own figures come from bench/peers.py; compare the two in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import cpu_seconds, free_port, fresh_database  # noqa: E402
from queue_service.store import queries  # noqa: E402

LEAN_SCHEMA = """
CREATE TABLE lean_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'queued',
    locked_by text,
    locked_at timestamptz
);
CREATE INDEX lean_jobs_runnable ON lean_jobs (id) WHERE status = 'queued';
CREATE FUNCTION lean_jobs_announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('lean_jobs', 'default'); RETURN NULL; END $$;
CREATE TRIGGER lean_jobs_announce AFTER INSERT ON lean_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION lean_jobs_announce();
"""
LEAN_ENQUEUE = "INSERT INTO lean_jobs (payload) VALUES (%s::jsonb)"
LEAN_CLAIM = """
UPDATE lean_jobs SET status = 'running', locked_by = 'w', locked_at = now()
WHERE id IN (SELECT id FROM lean_jobs WHERE status = 'queued' ORDER BY id
             LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id
"""
LEAN_COMPLETE = "DELETE FROM lean_jobs WHERE id = ANY(%s)"
CLAIM = "SELECT id, lease FROM claim_jobs('w', %s, 'default')"
COMPLETE = "SELECT count(*) FROM complete_job(%s::uuid[], %s::bigint[], %s::text[]::jsonb[])"


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def payload() -> str:
    return json.dumps({"source_type": "s3", "s3_key": f"floors/{uuid.uuid4().hex}.mp4"})


# -- 1. a gRPC hop -----------------------------------------------------------------------------


async def serve_health(port: int) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


async def hop(target: str, calls: int, gap: float) -> float:
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        stub = health_pb2_grpc.HealthStub(channel)
        samples = []
        for n in range(calls + calls // 10):  # the first tenth warms up
            if gap:
                await asyncio.sleep(gap)
            started = time.perf_counter()
            await stub.Check(health_pb2.HealthCheckRequest())
            if n >= calls // 10:
                samples.append(time.perf_counter() - started)
    return median_ms(samples)


def grpc_hop(calls: int) -> tuple[float, float]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-health", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline() != "serving\n":
            raise SystemExit(f"the gRPC server did not start ({server.wait()})")
        target = f"127.0.0.1:{port}"
        return asyncio.run(hop(target, calls, 0.0)), asyncio.run(hop(target, calls, 0.005))
    finally:
        server.terminate()
        server.wait()


# -- 2. one job per statement ------------------------------------------------------------------


def per_statement(conn: psycopg.Connection[Any], calls: int, run: Callable[[], object]) -> float:
    samples = []
    for n in range(calls + calls // 10):
        started = time.perf_counter()
        run()
        if n >= calls // 10:
            samples.append(time.perf_counter() - started)
    return median_ms(samples)


def enqueue_params(jobs: int) -> dict[str, Any]:
    """sql/queries.sql `enqueue`'s parameters for `jobs` new jobs, as the service sends them."""
    return {
        "inputs": [payload() for _ in range(jobs)],
        "queues": ["default"] * jobs,
        "priorities": [0] * jobs,
        "max_attempts": [0] * jobs,
        "keys": [""] * jobs,
        "run_afters": [None] * jobs,
        "roles": [None] * jobs,
        "credentials": [None] * jobs,
        "operators": [None] * jobs,
    }


def single_statements(url: str, calls: int) -> dict[str, float]:
    enqueue = queries()["enqueue"]
    claim = queries()["claim"]
    with psycopg.connect(url, autocommit=True) as conn:
        lean = per_statement(conn, calls, lambda: conn.execute(LEAN_ENQUEUE, (payload(),)))
        ours = per_statement(
            conn, calls, lambda: conn.execute(enqueue, enqueue_params(1), binary=True).fetchall()
        )
        claim_params = {"worker_id": "w", "limit": 1, "queue": "default"}
        claim_one = per_statement(
            conn, calls, lambda: conn.execute(claim, claim_params, binary=True).fetchall()
        )
    return {"lean enqueue": lean, "enqueue": ours, "claim of one": claim_one}


def bulk_rows(url: str, rounds: int) -> tuple[float, float]:
    """Microseconds a row (wall, median of `rounds`) of an enqueue of 1,000 jobs in one
    statement: this project's, and the lean table's INSERT."""
    enqueue = queries()["enqueue"]
    ours, lean = [], []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(rounds):
            params = enqueue_params(1000)
            started = time.perf_counter()
            conn.execute(enqueue, params, binary=True).fetchall()
            ours.append((time.perf_counter() - started) / 1000)
            payloads = [payload() for _ in range(1000)]
            started = time.perf_counter()
            conn.execute("INSERT INTO lean_jobs (payload) SELECT unnest(%s::jsonb[])", (payloads,))
            lean.append((time.perf_counter() - started) / 1000)
    return statistics.median(ours) * 1e6, statistics.median(lean) * 1e6


# -- 3. batched: the database's CPU per job ------------------------------------------------------


def batched_cpu(url: str, jobs: int, batch: int, lean: bool) -> float:
    """Microseconds of the server process's CPU per job: claim `batch`, complete them, until
    `jobs` jobs (enqueued first, in bulk) are done."""
    with psycopg.connect(url, autocommit=True) as conn:
        if lean:
            for first in range(0, jobs, 1000):
                conn.execute(
                    "INSERT INTO lean_jobs (payload) SELECT unnest(%s::jsonb[])",
                    ([payload() for _ in range(min(1000, jobs - first))],),
                )
        else:
            for first in range(0, jobs, 1000):
                count = min(1000, jobs - first)
                conn.execute(
                    "SELECT count(*) FROM enqueue_jobs(%s::jsonb[], NULL, NULL, NULL, NULL, NULL)",
                    ([payload() for _ in range(count)],),
                )
        conn.execute("VACUUM ANALYZE")
        pid = conn.info.backend_pid
        before = cpu_seconds(pid)
        done = 0
        while done < jobs:
            if lean:
                ids = [r[0] for r in conn.execute(LEAN_CLAIM, (batch,)).fetchall()]
                if not ids:
                    break
                conn.execute(LEAN_COMPLETE, (ids,))
            else:
                rows = conn.execute(CLAIM, (batch,)).fetchall()
                if not rows:
                    break
                ids = [r[0] for r in rows]
                conn.execute(COMPLETE, (ids, [r[1] for r in rows], ["{}"] * len(rows)))
            done += len(ids)
        if not done:
            raise SystemExit("no job was claimed")
        return (cpu_seconds(pid) - before) / done * 1e6


# -- the run -------------------------------------------------------------------------------------


def prepare(url: str) -> None:
    """The database at `url` migrated, with the leanest queue table beside this project's."""
    subprocess.run(
        [sys.executable, "-m", "queue_service.migrate"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LEAN_SCHEMA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per single-call figure")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per batched figure")
    parser.add_argument("--batch", type=int, default=250, help="jobs per claim and completion")
    parser.add_argument("--serve-health", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_health:
        asyncio.run(serve_health(args.serve_health))
        return

    together, apart = grpc_hop(args.calls)
    print(
        f"gRPC hop (a health check): p50 {together:.3f} ms back to back, {apart:.3f} ms 5 ms apart"
    )
    with fresh_database("floors") as url:
        prepare(url)
        for what, ms in single_statements(url, args.calls).items():
            print(f"one statement, committed: {what}: p50 {ms:.3f} ms")
        ours, lean = bulk_rows(url, 15)
        print(f"an enqueue of 1,000 in one statement: {ours:.1f} us a row, lean table {lean:.1f}")
        for lean in (False, True):
            cpu = batched_cpu(url, args.jobs, args.batch, lean)
            table = "the leanest queue table" if lean else "this project's state machine"
            print(
                f"claim + complete, {args.batch} a statement, {table}: "
                f"{cpu:.1f} us of database CPU a job"
            )


if __name__ == "__main__":
    main()
