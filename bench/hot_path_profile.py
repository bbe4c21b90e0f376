"""Where the time goes: py-spy profiles of a drain, and the plans of the hot functions at depth.

    .venv/bin/python bench/hot_path_profile.py --py-spy PATH/TO/py-spy [--gil] [--rows 1000000]

1. drain: this project's real processes (as bench/peers.py runs them) drain --jobs bulk-enqueued
   no-op jobs at --concurrency; py-spy samples the queue service and the worker for --seconds
   during the drain (`py-spy record --format raw`, folded stacks; with --gil only the thread
   holding the GIL, i.e. Python's own CPU), and the top functions of each, by their own samples
   and by the samples under them, are printed.
2. plans: on a fresh database with the migrations applied, the table is analyzed while empty,
   the hot statements are called a few times (plpgsql caches its plans), --rows runnable QUEUED
   rows are added with no ANALYZE after them, and one enqueue, claim of one, heartbeat and
   complete are run with auto_explain (ANALYZE, BUFFERS, nested statements) reporting to this
   session: the plans each function's statements really ran with, printed.

py-spy is not a dependency of the project: install it anywhere (`pip install py-spy`) and pass
its path. Folded stacks and plans are also written to --out (default bench/.peers/profile/).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers

HOT_CALLS = """
SELECT job_id FROM enqueue_jobs(ARRAY[jsonb_build_object('source_type', 's3', 's3_key',
    'explain/' || %(i)s || '.mp4')], ARRAY['default'], ARRAY[0], ARRAY[0], ARRAY[''],
    ARRAY[NULL::timestamptz]);
"""


def top_frames(folded: Path, count: int = 15) -> list[str]:
    """The frames with the most samples of their own, and under them, from py-spy's raw output."""
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        samples = int(n)
        total += samples
        # "function (file:line)" -> "function (file)": a function's lines together
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            under[frame] += samples
    out = [f"{total} samples"]
    out.append("by own samples:")
    out += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(count)]
    out.append("by samples under the frame:")
    out += [f"  {n / total:6.1%}  {frame}" for frame, n in under.most_common(count)]
    return out


def drain_profile(args: argparse.Namespace, out: Path) -> None:
    ns = peers.parse_args(["--jobs", str(args.jobs), "--concurrency", str(args.concurrency)])
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ctx = peers.Context(args=ns, logs=logs)
    system = peers.Project(ctx)
    with peers.fresh_database("profile") as url:
        ctx.url = url
        system.prepare()
        try:
            ctx.conn = peers.poll_connection(url)
            system.enqueue("bulk", args.jobs, 0)
            peers.vacuum(ctx.conn)
            worker = system.start_worker(args.concurrency, logs / "starts.json")
            system.wait_ready(worker)
            assert system.service is not None
            spies = []
            for name, pid in (("queue-service", system.service.pid), ("worker", worker.pid)):
                target = out / f"{name}.folded"
                spies.append(
                    (
                        name,
                        target,
                        subprocess.Popen(
                            [
                                *(args.py_spy, "record", "--pid", str(pid), "--format", "raw"),
                                *("--rate", "100", "--duration", str(args.seconds)),
                                *(("--gil",) if args.gil else ()),
                                *("--output", str(target), "--nonblocking"),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        ),
                    )
                )
            started = time.monotonic()
            peers.wait_until_done(ctx.conn, system.pending_sql, 600, 0.25, worker)
            drained = time.monotonic() - started
            for _, _, spy in spies:
                spy.wait(args.seconds + 30)
            system.stop_worker(worker, logs / "starts.json")
            print(f"drain: {args.jobs} jobs in {drained:.1f}s after the worker was ready")
            if drained < args.seconds:
                print(f"  (the drain ended before the {args.seconds}s of sampling: more --jobs)")
            for name, target, _ in spies:
                print(f"\n== {name}")
                print("\n".join(top_frames(target)) if target.exists() else "  no profile")
        finally:
            if ctx.conn is not None:
                ctx.conn.close()
            system.close()


FILL = """
INSERT INTO ingestion_jobs (status, priority, run_after, input, idempotency_key, created_at,
    updated_at)
SELECT 'QUEUED', 0, now() - g * interval '1 second',
       jsonb_build_object('source_type', 's3', 's3_key', 'fill/' || g || '.mp4'),
       'fill-' || g, now() - g * interval '1 second', now() - g * interval '1 second'
FROM generate_series(1, %(rows)s::int) AS g
"""


def plans(args: argparse.Namespace, out: Path) -> None:
    from queue_service import migrate

    with peers.fresh_database("explain") as url:
        asyncio.run(migrate.apply_async(url))
        messages: list[str] = []
        with psycopg.connect(url, autocommit=True) as conn:
            conn.add_notice_handler(lambda d: messages.append(d.message_primary or ""))
            conn.execute("ANALYZE ingestion_jobs")

            def hot(i: int, explain: bool) -> None:
                ids = conn.execute(HOT_CALLS, {"i": i}).fetchall()  # type: ignore[arg-type]
                row = conn.execute(
                    "SELECT id, lease FROM claim_jobs('explain', 1, 'default')"
                ).fetchone()
                assert row is not None, "nothing to claim"
                job_id, lease = row
                conn.execute(
                    "SELECT action FROM update_job_heartbeat(ARRAY[%s]::uuid[], "
                    "ARRAY[%s]::bigint[], ARRAY['noop'], ARRAY[0.5]::float8[])",
                    (job_id, lease),
                )
                conn.execute(
                    "SELECT outcome FROM complete_job(ARRAY[%s]::uuid[], ARRAY[%s]::bigint[], "
                    "ARRAY['{}']::jsonb[])",
                    (job_id, lease),
                )
                assert ids

            for i in range(8):  # past plpgsql's five custom plans: its generic plans are made
                hot(i, False)
            started = time.monotonic()
            conn.execute(FILL, {"rows": args.rows})  # type: ignore[arg-type]
            print(f"\nplans: {args.rows:,} QUEUED rows added in {time.monotonic() - started:.1f}s")
            stats = conn.execute(
                "SELECT reltuples, relpages FROM pg_class WHERE relname = 'ingestion_jobs'"
            ).fetchone()
            print(f"pg_class says reltuples={stats[0] if stats else '?'} (no ANALYZE since)")
            conn.execute("LOAD 'auto_explain'")
            for setting in (
                "auto_explain.log_min_duration = 0",
                "auto_explain.log_analyze = on",
                "auto_explain.log_buffers = on",
                "auto_explain.log_timing = on",
                "auto_explain.log_nested_statements = on",
                "client_min_messages = log",
            ):
                conn.execute(f"SET {setting}")  # type: ignore[arg-type]
            for k in range(3):
                messages.clear()
                started = time.monotonic()
                hot(100 + k, True)
                seconds = time.monotonic() - started
            text = "\n\n".join(messages)
            (out / "plans.txt").write_text(text)
            print(f"one enqueue + claim + heartbeat + complete: {seconds * 1000:.1f} ms")
            print(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--py-spy", help="py-spy's path; without it the drain is not profiled")
    parser.add_argument("--jobs", type=int, default=50000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument(
        "--gil", action="store_true", help="only samples of the thread holding the GIL"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=peers.PEERS / "profile")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.py_spy:
        drain_profile(args, args.out)
    if args.rows:
        plans(args, args.out)


if __name__ == "__main__":
    main()
