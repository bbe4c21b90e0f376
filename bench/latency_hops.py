"""Where an idle worker's enqueue -> handler start latency goes, hop by hop.

    .venv/bin/python bench/latency_hops.py [--jobs 1500] [--gap-ms 5] [--root OTHER_CHECKOUT]

Starts `python -m queue_service` and `python -m worker_service --concurrency 10` (of this
checkout, or of --root, for A/B) on a fresh database, with bench/noop_pipeline.py as the
pipeline, and trickles --jobs single EnqueueJob calls --gap-ms apart from bench/project_client.py
(what bench/peers.py's latency scenario does). Every job then carries four times on one clock:

    the client's call     bench/project_client.py, just before EnqueueJob
    the enqueue           created_at: the start of enqueue_jobs inside the enqueue's statement
    the claim             locked_at: the start of claim_jobs inside the claim's statement
    the handler's start   output.started_at, written by the no-op stage

so the latency splits into: the call reaching the database (client, gRPC, the queue service,
its pool), the enqueue committing and waking a claim (the statement, NOTIFY, the listener, the
waiting Claim's turn), and the claim reaching the handler (the statement, its commit, the answer
over gRPC, the worker, its stage thread). It prints p50 and p99 of each, and of the whole.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import percentile
from bench.stack import Stack, add_root_argument, stack

HOPS = ("call -> enqueue", "enqueue -> claim", "claim -> handler", "whole")


def trickle(running: Stack, count: int, start: int, gap_ms: float) -> dict[str, float]:
    """Job id -> the time its EnqueueJob call started."""
    answer = running.client(
        "enqueue",
        "--mode",
        "trickle",
        "--count",
        str(count),
        "--start",
        str(start),
        "--gap-ms",
        str(gap_ms),
        timeout=60 + count * (gap_ms / 1000 + 0.05),
    )
    return dict(json.loads(answer.split("RESULT ", 1)[1])["calls"])


def hops(url: str, calls: dict[str, float]) -> dict[str, list[float]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id::text, extract(epoch FROM created_at)::float8, "
            "extract(epoch FROM locked_at)::float8, (output->>'started_at')::float8 "
            "FROM ingestion_jobs WHERE id = ANY(%s::uuid[])",
            (list(calls),),
        ).fetchall()
    found: dict[str, list[float]] = {hop: [] for hop in HOPS}
    for job_id, enqueued, claimed, started in rows:
        if started is None:
            continue
        called = calls[job_id]
        for hop, seconds in zip(
            HOPS,
            (enqueued - called, claimed - enqueued, started - claimed, started - called),
            strict=True,
        ):
            found[hop].append(seconds)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    add_root_argument(parser)
    args = parser.parse_args()
    with stack(args.root) as running:
        running.start_worker(10)
        time.sleep(3)  # the worker is up and its Claim waits
        trickle(running, 5, 0, 20)  # warm-up
        time.sleep(1)
        calls = trickle(running, args.jobs, 100, args.gap_ms)
        time.sleep(1.5)  # the last jobs start
        found = hops(running.url, calls)
    started = len(found["whole"])
    print(f"{started} of {len(calls)} jobs started, {args.gap_ms:g} ms apart (ms, p50 / p99):")
    if not started:
        raise SystemExit("no job started")
    for hop in HOPS:
        p50, p99 = statistics.median(found[hop]) * 1000, percentile(found[hop], 99) * 1000
        print(f"  {hop:17s} {p50:6.2f} / {p99:6.2f}")


if __name__ == "__main__":
    main()
