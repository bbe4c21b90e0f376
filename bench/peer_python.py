"""The Python peers of bench/peers.py: PgQueuer and Procrastinate, each as producer or worker.

Runs in bench/.peers/venv (setup_peers.sh), never in the project's .venv:

    python bench/peer_python.py setup   --system pgqueuer|procrastinate --db URL
    python bench/peer_python.py enqueue --system S --db URL --mode single|bulk|trickle --count N
                                        [--start I] [--batch B] [--gap-ms G] [--timings]
    python bench/peer_python.py work    --system S --db URL --concurrency C --starts FILE
    python bench/peer_python.py depth   --system pgqueuer --db URL --count N --start I

`enqueue` prints `RESULT {json}` last; `work` prints `READY` once it is working and, on SIGTERM,
stops gracefully, writes the handler start times ([[i, epoch seconds], ...]) to FILE and exits 0.
The handler does nothing else: it records when it started. `depth` times N calls of each of
PgQueuer's own queries one after another, as its QueueManager makes them: enqueue one job,
dequeue a batch of one, update its heartbeat, log it as successful (its completion).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

TASK = "noop"


def result(payload: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(payload), flush=True)


# -- PgQueuer ---------------------------------------------------------------------------------


async def pgqueuer_queries(url: str) -> tuple[Any, Any]:
    import asyncpg
    from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
    from pgqueuer.queries import Queries

    connection = await asyncpg.connect(url)
    return Queries(AsyncpgDriver(connection)), connection


async def pgqueuer_setup(args: argparse.Namespace) -> None:
    queries, connection = await pgqueuer_queries(args.db)
    await queries.install()
    await connection.close()


async def pgqueuer_producer(
    args: argparse.Namespace,
) -> tuple[Callable[[int], Awaitable[Any]], Callable[[list[int]], Awaitable[Any]], Any]:
    queries, connection = await pgqueuer_queries(args.db)

    async def one(i: int) -> None:
        await queries.enqueue(TASK, json.dumps({"i": i}).encode(), 0)

    async def many(ids: list[int]) -> None:
        await queries.enqueue(
            [TASK] * len(ids), [json.dumps({"i": i}).encode() for i in ids], [0] * len(ids)
        )

    return one, many, connection.close


async def pgqueuer_work(args: argparse.Namespace, record: Callable[[int], None]) -> None:
    from pgqueuer.qm import QueueManager

    queries, connection = await pgqueuer_queries(args.db)
    manager = QueueManager(queries)

    @manager.entrypoint(TASK)
    async def noop(job: Any) -> None:
        record(json.loads(job.payload)["i"])

    # max_concurrent_tasks caps the jobs this worker holds; PgQueuer wants it to be at least
    # twice the dequeue batch, so the batch is half the concurrency.
    batch_size = max(1, args.concurrency // 2)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, manager.shutdown.set)
    loop.add_signal_handler(signal.SIGINT, manager.shutdown.set)
    task = asyncio.create_task(
        manager.run(
            batch_size=batch_size,
            max_concurrent_tasks=max(args.concurrency, 2 * batch_size),
        )
    )
    print("READY", flush=True)
    await task
    await connection.close()


async def pgqueuer_depth(args: argparse.Namespace) -> None:
    import uuid
    from datetime import timedelta

    from pgqueuer.queries import EntrypointExecutionParameter

    queries, connection = await pgqueuer_queries(args.db)
    timings: dict[str, list[float]] = {"enqueue": [], "claim": [], "heartbeat": [], "complete": []}
    for i in range(args.start, args.start + args.count):
        t = time.perf_counter()
        await queries.enqueue(TASK, json.dumps({"i": i}).encode(), 0)
        timings["enqueue"].append(time.perf_counter() - t)
    manager_id = uuid.uuid4()
    entrypoints = {TASK: EntrypointExecutionParameter(concurrency_limit=0)}
    jobs = []
    for _ in range(args.count):
        t = time.perf_counter()
        batch = await queries.dequeue(
            batch_size=1,
            entrypoints=entrypoints,
            queue_manager_id=manager_id,
            global_concurrency_limit=None,
            heartbeat_timeout=timedelta(seconds=30),  # QueueManager.run's default
        )
        timings["claim"].append(time.perf_counter() - t)
        if len(batch) != 1:
            raise SystemExit(f"dequeue returned {len(batch)} jobs, expected 1")
        jobs.append(batch[0])
    for job in jobs:
        t = time.perf_counter()
        await queries.update_heartbeat([job.id])
        timings["heartbeat"].append(time.perf_counter() - t)
    for job in jobs:
        t = time.perf_counter()
        await queries.log_jobs([(job, "successful", None)])
        timings["complete"].append(time.perf_counter() - t)
    await connection.close()
    result(timings)


# -- Procrastinate ----------------------------------------------------------------------------


def procrastinate_app(url: str, record: Callable[[int], None] | None = None) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name=TASK)
    async def noop(i: int) -> None:
        if record is not None:
            record(i)

    app.bench_task = noop  # type: ignore[attr-defined]
    return app


async def procrastinate_setup(args: argparse.Namespace) -> None:
    app = procrastinate_app(args.db)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def procrastinate_work(args: argparse.Namespace, record: Callable[[int], None]) -> None:
    app = procrastinate_app(args.db, record)
    async with app.open_async():
        # Its own SIGTERM/SIGINT handlers stop the worker gracefully and return.
        task = asyncio.create_task(
            app.run_worker_async(concurrency=args.concurrency, wait=True, listen_notify=True)
        )
        print("READY", flush=True)
        await task


# -- the commands -----------------------------------------------------------------------------


async def setup(args: argparse.Namespace) -> None:
    await (pgqueuer_setup if args.system == "pgqueuer" else procrastinate_setup)(args)
    result({})


async def enqueue(args: argparse.Namespace) -> None:
    app = None
    if args.system == "pgqueuer":
        one, many, close = await pgqueuer_producer(args)
    else:
        app = procrastinate_app(args.db)
        await app.open_async()
        task = app.bench_task

        async def one(i: int) -> None:
            await task.defer_async(i=i)

        async def many(ids: list[int]) -> None:
            await task.batch_defer_async(*({"i": i} for i in ids))

        close = app.close_async
    calls: list[tuple[int, float]] = []
    timings: list[float] = []
    end = args.start + args.count
    started = time.perf_counter()
    if args.mode == "single":
        for i in range(args.start, end):
            t = time.perf_counter()
            await one(i)
            if args.timings:
                timings.append(time.perf_counter() - t)
    elif args.mode == "bulk":
        for first in range(args.start, end, args.batch):
            await many(list(range(first, min(first + args.batch, end))))
    else:  # trickle: call k starts at t0 + k * gap (or at once when the previous one ran late)
        gap = args.gap_ms / 1000
        t0 = time.monotonic()
        for k, i in enumerate(range(args.start, end)):
            delay = t0 + k * gap - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            calls.append((i, time.time()))
            await one(i)
    seconds = time.perf_counter() - started
    await close()
    result({"seconds": seconds, "count": args.count, "calls": calls, "timings": timings})


STARTS: list[tuple[int, float]] = []  # (i, epoch seconds) of every handler call


def record(i: int) -> None:
    STARTS.append((i, time.time()))


async def depth(args: argparse.Namespace) -> None:
    if args.system != "pgqueuer":
        raise SystemExit("depth: PgQueuer only")
    await pgqueuer_depth(args)


async def work(args: argparse.Namespace) -> None:
    await (pgqueuer_work if args.system == "pgqueuer" else procrastinate_work)(args, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["setup", "enqueue", "work", "depth"])
    parser.add_argument("--system", choices=["pgqueuer", "procrastinate"], required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--mode", choices=["single", "bulk", "trickle"], default="single")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    parser.add_argument("--timings", action="store_true")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--starts", default="starts.json")
    args = parser.parse_args()
    try:
        commands = {"setup": setup, "enqueue": enqueue, "work": work, "depth": depth}
        asyncio.run(commands[args.command](args))
    finally:
        if args.command == "work":
            with open(args.starts, "w") as out:
                json.dump(STARTS, out)


if __name__ == "__main__":
    main()
