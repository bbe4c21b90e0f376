"""What the database spends per job on the hot path: claim_jobs, then complete_job, in pure SQL.

No gRPC and no service: one connection claims a batch of B jobs and completes them, until the
queue is drained, and the time of each call is summed per job. This isolates the state machine's
own cost (planning, execution, index maintenance, triggers) from everything around it.

Each run drains N jobs in a fresh database copied from a migrated template, so no run sees the
dead rows of the one before. The statistics are the template's (autovacuum may take new ones
during a run) unless --analyze takes them right after the enqueue: then they say that no job
runs, the case that once made a settle compare every RUNNING job with every entry
(docs/state-machine.md, "Plans").

To compare two versions of the functions, migrate one template per version and interleave the
runs (the machine is shared, one timing is never enough):

    createdb -h 127.0.0.1 -U postgres cost_a
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/cost_a python -m queue_service.migrate
    # ... and cost_b the same way, from the other checkout; then, from this one:
    python bench/sql_cost.py --template cost_a --template cost_b --batch 10 --batch 100 --rounds 5

Each template must have no open connection while the runs copy it.

It prints one line per run and, per template and batch size, the medians of claim and complete
in microseconds per job (wall time, seen by the client), and of the CPU time the server process
spent per job (from /proc, so the database must run on this machine): the figure that other
load on the machine disturbs least. With --explain it prints instead auto_explain's plans
(nested statements, with timings) of one claim and one complete of --batch jobs, after a few
warm-up batches.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

SERVER = "postgresql://postgres@127.0.0.1:5432"

ENQUEUE = """
SELECT count(*)
FROM enqueue_jobs(
    (SELECT array_agg(jsonb_build_object('source_type', 's3', 's3_key', %(tag)s || '/' || g))
     FROM generate_series(1, %(n)s) g),
    array_fill('default'::text, ARRAY[%(n)s]), array_fill(0, ARRAY[%(n)s]),
    array_fill(0, ARRAY[%(n)s]), array_fill(''::text, ARRAY[%(n)s]),
    array_fill(NULL::timestamptz, ARRAY[%(n)s]))
"""
CLAIM = "SELECT id, lease FROM claim_jobs('w', %s, 'default')"
COMPLETE = "SELECT count(*) FROM complete_job(%s::uuid[], %s::bigint[], %s::text[]::jsonb[])"


def server_cpu_seconds(pid: int) -> float:
    """User and system CPU time of a server process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(conninfo: str, jobs: int, batch: int, analyze: bool) -> tuple[float, float, float]:
    """Seconds per job spent in claim_jobs and in complete_job (wall), and the server process's
    CPU seconds per job for both, draining `jobs` jobs."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(ENQUEUE, {"tag": uuid.uuid4().hex, "n": jobs})
        if analyze:
            conn.execute("VACUUM ANALYZE ingestion_jobs")
        pid = conn.info.backend_pid
        cpu = server_cpu_seconds(pid)
        claiming = completing = 0.0
        done = 0
        while done < jobs:
            started = time.perf_counter()
            rows = conn.execute(CLAIM, (batch,)).fetchall()
            claiming += time.perf_counter() - started
            if not rows:
                break
            ids, leases = [r[0] for r in rows], [r[1] for r in rows]
            started = time.perf_counter()
            conn.execute(COMPLETE, (ids, leases, ["{}"] * len(ids)))
            completing += time.perf_counter() - started
            done += len(rows)
        return claiming / done, completing / done, (server_cpu_seconds(pid) - cpu) / done


def fresh_copy(template: str) -> str:
    name = f"{template}_run_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return name


def drop(name: str) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def explain(conninfo: str, batch: int) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(ENQUEUE, {"tag": uuid.uuid4().hex, "n": batch * 10})
        messages: list[str] = []
        conn.add_notice_handler(lambda d: messages.append(d.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting, value in [
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_analyze", "on"),
            ("auto_explain.log_buffers", "on"),
            ("auto_explain.log_nested_statements", "on"),
            ("client_min_messages", "log"),
        ]:
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        claimed: list[str] = []
        for _ in range(3):
            messages.clear()
            rows: list[Any] = conn.execute(CLAIM, (batch,)).fetchall()
            claimed = list(messages)
            messages.clear()
            conn.execute(COMPLETE, ([r[0] for r in rows], [r[1] for r in rows], ["{}"] * len(rows)))
        for message in [*claimed, "=========== complete_job", *messages]:
            print(message)
            print("--")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", action="append", required=True, help="migrated database")
    parser.add_argument("--batch", action="append", type=int, help="jobs per call (default 100)")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs drained per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per template and batch")
    parser.add_argument("--explain", action="store_true", help="print plans, time nothing")
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="take statistics once the jobs are enqueued (they then say that no job runs)",
    )
    args = parser.parse_args()
    batches = args.batch or [100]

    if args.explain:
        for template in args.template:
            name = fresh_copy(template)
            try:
                print(f"########## {template}")
                explain(f"{SERVER}/{name}", batches[0])
            finally:
                drop(name)
        return

    results: dict[tuple[str, int], list[tuple[float, float, float]]] = defaultdict(list)
    for round_ in range(args.rounds):
        for batch in batches:
            for template in args.template:  # interleaved: A, B, A, B, ...
                name = fresh_copy(template)
                try:
                    claim, complete, cpu = drain(f"{SERVER}/{name}", args.jobs, batch, args.analyze)
                finally:
                    drop(name)
                results[(template, batch)].append((claim, complete, cpu))
                print(
                    f"round {round_} batch {batch:4} {template}: claim {claim * 1e6:6.1f} "
                    f"complete {complete * 1e6:6.1f} us/job, server CPU {cpu * 1e6:6.1f} us/job",
                    flush=True,
                )
    print("\nmedians (us/job)")
    for (template, batch), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        claim = statistics.median(r[0] for r in runs) * 1e6
        complete = statistics.median(r[1] for r in runs) * 1e6
        cpu = statistics.median(r[2] for r in runs) * 1e6
        total = claim + complete
        print(
            f"batch {batch:4} {template:>20}: claim {claim:6.1f} complete {complete:6.1f} "
            f"total {total:6.1f} -> {1e6 / total:6.0f} jobs/s; server CPU {cpu:6.1f}"
        )


if __name__ == "__main__":
    main()
