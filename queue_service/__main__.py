"""`python -m queue_service`: the gRPC queue service.

Applies migrations (under an advisory lock), then serves QueueService, AdminService and
AdvertService on QUEUE_LISTEN until SIGTERM or SIGINT, when it stops taking calls, lets running
ones finish for a few seconds and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time

import psycopg

from jobqueue import heap, logs, tracing
from queue_service import migrate
from queue_service.config import Config, ConfigError, mask_url
from queue_service.server import build

log = logging.getLogger("queue_service")

# How long start-up keeps trying to reach the database before giving up (compose may start the
# service a moment before PostgreSQL accepts connections).
DATABASE_WAIT_SECONDS = 30.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m queue_service",
        description="The ingestion job queue's gRPC service (the only database client).",
        epilog=(
            "Environment: DATABASE_URL (or SUPABASE_DB_URL), QUEUE_LISTEN, QUEUE_AUTH_TOKEN, "
            "HEARTBEAT_TIMEOUT_SECONDS, LOCK_TIMEOUT_SECONDS, STALE_SWEEP_INTERVAL_SECONDS, "
            "RETRY_BACKOFF_BASE_SECONDS, RETRY_BACKOFF_MAX_SECONDS, RETENTION_SUCCEEDED_SECONDS, "
            "RETENTION_CANCELLED_SECONDS, RETENTION_FAILED_SECONDS, RETENTION_AUDIT_SECONDS, "
            "RETENTION_SWEEP_INTERVAL_SECONDS, DB_POOL_MIN_SIZE, "
            "DB_POOL_MAX_SIZE, MAX_CONCURRENT_CLAIMS, APPLY_MIGRATIONS, LOCAL_MEDIA_ROOT, "
            "LOG_LEVEL, STREAM_LOST_GRACE_SECONDS, QUEUE_METRICS_LISTEN (0.0.0.0:9101; off "
            "disables), LOG_FORMAT (text | json), OTEL_EXPORTER_OTLP_ENDPOINT (traces; off unless "
            "set) and the other OTEL_* variables."
        ),
    )
    parser.add_argument(
        "--listen", help="HOST:PORT to serve on (env QUEUE_LISTEN, default 0.0.0.0:50051)"
    )
    parser.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply migrations at start-up (env APPLY_MIGRATIONS=0)",
    )
    return parser.parse_args(argv)


async def wait_and_migrate(config: Config) -> list[str]:
    deadline = time.monotonic() + DATABASE_WAIT_SECONDS
    while True:
        try:
            return await migrate.apply_async(config.database_url)
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise
            log.warning("database not reachable yet (%s); retrying", str(error).splitlines()[0])
            await asyncio.sleep(1.0)


async def serve(config: Config) -> int:
    if config.apply_migrations:
        applied = await wait_and_migrate(config)
        log.info("migrations applied: %s", ", ".join(applied) or "none pending")
    service = await build(config)
    # Before its tasks start: the full GC passes from here on skip the heap built so far.
    heap.freeze_startup_heap()
    try:
        await service.start()
    except BaseException:
        # What did start must not keep the process alive; the start's own error is the one told.
        try:
            await service.stop(grace=0)
        except Exception:
            log.exception("stopping after a failed start failed too")
        raise
    print(f"Queue service listening on {config.listen} (port {service.port})", flush=True)
    if service.metrics is not None and config.metrics_listen is not None:
        host = config.metrics_listen.rpartition(":")[0]
        print(f"Metrics at {service.metrics.url(host)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: no new calls; finishing running ones")
    await service.stop(grace=5.0)
    tracing.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    try:
        logs.configure(logs.log_format(env), env.get("LOG_LEVEL", "INFO"))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.listen:
        env["QUEUE_LISTEN"] = args.listen
    if args.no_migrate:
        env["APPLY_MIGRATIONS"] = "0"
    try:
        config = Config.from_env(env)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Database: {mask_url(config.database_url)}", flush=True)
    tracing.setup("queue_service", env)
    try:
        return asyncio.run(serve(config))
    except psycopg.OperationalError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(
            f"error: cannot reach the database {mask_url(config.database_url)}: {first_line}",
            file=sys.stderr,
        )
        return 1
    except (migrate.MigrationError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
