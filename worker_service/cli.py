"""`python -m worker_service`: flags, output lines and exit codes.

Exit codes: 0 after a normal finish (including a SIGTERM/SIGINT stop), 1 when the queue service
cannot be reached or refuses the token, 2 for a bad configuration or a pipeline that cannot be
loaded. Errors are one line on stderr; the checklist's output lines go to stdout; logs go to
stderr (LOG_LEVEL, default WARNING, so that stdout reads as the checklist shows).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

import grpc

from jobqueue import heap, logs, rpc, tracing
from jobqueue import metrics as served_metrics
from jobqueue.rpc import AUTH_CODES
from jobqueue.settings import ConfigError
from worker_service import metrics, output
from worker_service.client import AuthRefused, QueueClient, QueueUnreachable
from worker_service.config import ENV_MIRRORS, WorkerConfig, resolve
from worker_service.pipeline.base import Pipeline
from worker_service.pipeline_loader import PipelineLoadError, load_pipeline, queue_arguments
from worker_service.printer import Printer
from worker_service.runner import Worker

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_CONFIG = 2

log = logging.getLogger("worker_service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker_service",
        description=(
            "An ingestion worker: claims jobs from the queue service over gRPC, runs the "
            "pipeline on each, and reports heartbeats, completion and failures. Stateless; run "
            "as many as you like. Every flag has an environment variable (the flag wins)."
        ),
        epilog=(
            "Other environment: QUEUE_WORKER_TOKEN (or QUEUE_AUTH_TOKEN; sent as "
            "'authorization: Bearer ...' when set; --release-stale and --show-running send "
            "QUEUE_ADMIN_TOKEN), QUEUE_TLS_CA_FILE, QUEUE_TLS_CLIENT_CERT_FILE and "
            "QUEUE_TLS_CLIENT_KEY_FILE (TLS to the queue service), "
            "LOG_LEVEL (default WARNING), LOG_FORMAT (text | json), WORKER_METRICS_LISTEN "
            "(HOST:PORT of a Prometheus endpoint; off unless set), OTEL_EXPORTER_OTLP_ENDPOINT "
            "(traces; off unless set) and the other OTEL_* variables. "
            "SIGTERM/SIGINT: stop claiming, let running jobs finish "
            "within the shutdown grace, then hand the rest back (Release: QUEUED again at once, "
            "the unfinished attempt not counted) and exit 0. A second signal hands back at once."
        ),
    )
    commands = parser.add_mutually_exclusive_group()
    commands.add_argument(
        "--release-stale",
        action="store_true",
        help="release RUNNING jobs whose worker stopped heartbeating, print "
        "'Released N stale jobs' and exit",
    )
    commands.add_argument(
        "--show-running",
        action="store_true",
        help="print the running jobs with stage, progress, run time and heartbeat age, and exit",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        default=None,
        help="claim what is runnable now (up to --limit), process it and exit [env WORKER_ONCE=1]",
    )
    parser.add_argument(
        "--limit", metavar="N", help="exit after N jobs; 0 = no limit [env WORKER_LIMIT, default 0]"
    )
    parser.add_argument(
        "--poll-interval",
        metavar="S",
        dest="poll_interval_seconds",
        help="how long an idle worker's claim waits for work, in seconds (the queue service "
        "answers as soon as a job arrives) [env WORKER_POLL_INTERVAL, default 5, max 60]",
    )
    parser.add_argument(
        "--concurrency",
        metavar="N",
        help="jobs run at once by this process; when its jobs prove short (well under a "
        "second) it also claims up to about 0.1 s of work ahead (at most 500 jobs), which beat "
        "while they wait and are handed back at once on SIGTERM [env WORKER_CONCURRENCY, "
        "default 1]",
    )
    parser.add_argument(
        "--queue-addr",
        metavar="HOST:PORT",
        help="the queue service [env QUEUE_ADDR, default 127.0.0.1:50051]",
    )
    parser.add_argument(
        "--queue",
        metavar="NAME",
        help="the job queue to claim from [env WORKER_QUEUE, default 'default']",
    )
    parser.add_argument(
        "--worker-id",
        metavar="ID",
        help="recorded as locked_by [env WORKER_ID, default hostname-pid-random]",
    )
    parser.add_argument(
        "--pipeline",
        metavar="MODULE:CALLABLE",
        help="a callable returning the Pipeline to run, called with whichever of the keyword "
        "arguments queue_addr, token and rpc_timeout_seconds it declares (none at all is fine) "
        "[env WORKER_PIPELINE, default worker_service.pipeline.factory:build_pipeline]",
    )
    parser.add_argument(
        "--heartbeat-interval",
        metavar="S",
        dest="heartbeat_interval_seconds",
        help="seconds between a running job's heartbeats; keep it well under the queue "
        "service's HEARTBEAT_TIMEOUT_SECONDS [env HEARTBEAT_INTERVAL_SECONDS, default 5, max 60]",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        metavar="S",
        dest="heartbeat_timeout_seconds",
        help="stop a job (and never complete it) when none of its heartbeats was acknowledged "
        "for this long; set it to the queue service's own HEARTBEAT_TIMEOUT_SECONDS "
        "[env HEARTBEAT_TIMEOUT_SECONDS, default 120]",
    )
    parser.add_argument(
        "--shutdown-grace",
        metavar="S",
        dest="shutdown_grace_seconds",
        help="on SIGTERM, how long running jobs may take to finish before they are handed "
        "back [env WORKER_SHUTDOWN_GRACE_SECONDS, default 30]",
    )
    parser.add_argument(
        "--rpc-timeout",
        metavar="S",
        dest="rpc_timeout_seconds",
        help="deadline of each call to the queue service [env WORKER_RPC_TIMEOUT_SECONDS, "
        "default 10]",
    )
    parser.add_argument(
        "--connect-timeout",
        metavar="S",
        dest="connect_timeout_seconds",
        help="at start-up, how long to retry an unreachable queue service before exiting 1 "
        "[env WORKER_CONNECT_TIMEOUT_SECONDS, default 10]",
    )
    return parser


def configure(
    argv: Sequence[str] | None, env: Mapping[str, str]
) -> tuple[argparse.Namespace, WorkerConfig]:
    args = build_parser().parse_args(argv)
    flags = {dest: getattr(args, dest, None) for dest, _variable, _flag in ENV_MIRRORS}
    return args, resolve(flags, env)


# The checklist's lines, written in bulk under load (printer.py).
stdout = Printer()
say = stdout.say


def error_line(message: str) -> None:
    stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)


async def run_worker(config: WorkerConfig, pipeline: Pipeline) -> int:
    client = QueueClient(config)
    try:
        try:
            await client.check()
        except AuthRefused as error:
            error_line(
                f"the queue service at {config.queue_addr} refused the token "
                f"({config.token_source}): {error}"
            )
            return EXIT_UNREACHABLE
        except QueueUnreachable as error:
            error_line(f"cannot reach the queue service at {config.queue_addr}: {error}")
            return EXIT_UNREACHABLE
        served = None
        if config.metrics_listen is not None:
            try:
                served = served_metrics.serve(config.metrics_listen)
            except OSError as error:
                error_line(str(error))
                return EXIT_CONFIG
            metrics.turn_on()
            say(f"Metrics at {served.url(config.metrics_listen.rpartition(':')[0])}")
        worker = Worker(config, client, pipeline, say, stdout.flush)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        heap.freeze_startup_heap()  # before it claims: later full GC passes skip this heap
        say(output.READY)
        stdout.flush()
        try:
            await worker.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        counters = worker.counters
        for line in output.counters(counters.processed, counters.succeeded, counters.failed):
            say(line)
        stdout.flush()
        if served is not None:
            served.stop()
        if worker.fatal is not None:
            error_line(f"the queue service at {config.queue_addr} refused a claim: {worker.fatal}")
            return EXIT_UNREACHABLE
        return EXIT_OK
    finally:
        await client.close()


async def run_operator_command(config: WorkerConfig, args: argparse.Namespace) -> int:
    # An operator's command, with the admin role's credential (AdminService).
    config = dataclasses.replace(
        config, auth_token=config.admin_token, token_source=config.admin_token_source
    )
    client = QueueClient(config)
    try:
        if args.release_stale:
            say(output.released(await client.release_stale()))
        else:
            for line in output.running_jobs(await client.running_jobs()):
                say(line)
        return EXIT_OK
    except grpc.aio.AioRpcError as error:
        if error.code() in AUTH_CODES:
            error_line(
                f"the queue service at {config.queue_addr} refused the token "
                f"({config.admin_token_source}): {rpc.describe(error)}"
            )
        else:
            error_line(
                f"cannot reach the queue service at {config.queue_addr}: {rpc.describe(error)}"
            )
        return EXIT_UNREACHABLE
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    finally:
        stdout.flush()


def _main(argv: Sequence[str] | None) -> int:
    env = dict(os.environ)
    try:
        args, config = configure(argv, env)
    except ConfigError as error:
        error_line(str(error))
        return EXIT_CONFIG
    try:
        logs.configure(logs.log_format(env), env.get("LOG_LEVEL", "WARNING"), sys.stderr)
    except ConfigError as error:
        error_line(str(error))
        return EXIT_CONFIG
    tracing.setup("worker_service", env)
    if args.release_stale or args.show_running:
        return asyncio.run(run_operator_command(config, args))
    for line in output.starting(config.queue_addr, config.worker_id):
        say(line)
    try:
        pipeline = load_pipeline(config.pipeline, queue_arguments(config))
    except PipelineLoadError as error:
        error_line(f"cannot load the pipeline ({config.pipeline}): {error}")
        return EXIT_CONFIG
    say(output.pipeline_ready(len(pipeline)))
    try:
        return asyncio.run(run_worker(config, pipeline))
    finally:
        pipeline.close()
        tracing.shutdown()
