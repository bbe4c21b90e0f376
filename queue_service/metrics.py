"""The queue service's Prometheus families (docs/observability.md has the table).

Counters and histograms are recorded where the event happens (queue_service/observe.py: the
store's transitions and every RPC); the gauges of the job table are computed when Prometheus
scrapes, from one grouped query cached for a few seconds (`JobTableCollector`), so that any
number of scrapers cost at most one statement per cache period and a scrape never waits on a
slow database for long.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jobqueue.metrics import SECONDS_BUCKETS
from queue_service.store import Row

log = logging.getLogger(__name__)

STATUSES = ("QUEUED", "RUNNING", "SUCCEEDED", "RETRY", "FAILED", "CANCELLED")
# How long one reading of the job table serves scrapes.
CACHE_SECONDS = 5.0
# A scrape waits this long for a fresh reading, then answers with the last one it has.
READ_TIMEOUT_SECONDS = 3.0

ENQUEUED = Counter(
    "jobqueue_jobs_enqueued_total",
    "Jobs created by EnqueueJob/EnqueueJobs (a known idempotency key is not counted).",
    ["queue"],
)
ENQUEUE_DUPLICATES = Counter(
    "jobqueue_jobs_enqueue_duplicates_total",
    "Enqueues answered with an existing job (its idempotency key was known).",
    ["queue"],
)
CLAIMED = Counter("jobqueue_jobs_claimed_total", "Jobs handed to workers by Claim.", ["queue"])
COMPLETED = Counter(
    "jobqueue_jobs_completed_total", "Jobs completed (RUNNING -> SUCCEEDED).", ["queue"]
)
FAILED = Counter(
    "jobqueue_jobs_failed_total",
    "Failed attempts, by the status they left the job in (RETRY, FAILED = dead letter, "
    "CANCELLED) and the worker's error code.",
    ["queue", "status", "reason"],
)
RELEASED = Counter(
    "jobqueue_jobs_released_total",
    "RUNNING jobs put back: handed back by their worker (reason handed_back) or released as "
    "stale (heartbeat_timeout, lock_timeout).",
    ["queue", "reason"],
)
SETTLE_REFUSED = Counter(
    "jobqueue_settle_refused_total",
    "Complete/Fail/Release entries refused: the lease was no longer current, or no such job.",
    ["call", "outcome"],
)
HEARTBEATS = Counter(
    "jobqueue_heartbeats_total",
    "Job heartbeats written, by the action answered (continue, cancel, lease_lost).",
    ["action"],
)
CLAIM_WAIT = Histogram(
    "jobqueue_claim_wait_seconds",
    "How long a job waited for a worker once it was due (claim time - run_after).",
    ["queue"],
    buckets=SECONDS_BUCKETS,
)
ENQUEUE_TO_START = Histogram(
    "jobqueue_enqueue_to_start_seconds",
    "From enqueue to the first claim of a job (first attempts only).",
    ["queue"],
    buckets=SECONDS_BUCKETS,
)
RPC_DURATION = Histogram(
    "jobqueue_rpc_duration_seconds",
    "gRPC calls served, by method and status code (a stream: its whole life).",
    ["method", "code"],
    buckets=SECONDS_BUCKETS,
)
HEARTBEAT_STREAMS = Gauge(
    "jobqueue_heartbeat_streams_active", "Heartbeat streams open now (about one per worker)."
)


def reason_label(code: str | None) -> str:
    """An error code as a label value: bounded, never empty."""
    return (code or "unknown")[:64]


class JobTableCollector(Collector):
    """The job table's gauges at scrape time: jobs by queue and status, the oldest heartbeat of
    a RUNNING job (heartbeat lag), the oldest runnable job's wait; and the pools' use (`pools`:
    each class of call's psycopg pool, by name: hot, admin, adverts, background)."""

    def __init__(
        self,
        read: Callable[[], Any],
        pools: Mapping[str, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # `read` is the store's coroutine function; scrapes come on the HTTP server's thread and
        # run it on the service's event loop.
        self._read = read
        self._pools = pools
        self._loop = loop
        self._rows: list[Row] = []
        self._read_at = float("-inf")
        self._pending: concurrent.futures.Future[list[Row]] | None = None

    def _table(self) -> list[Row]:
        if time.monotonic() - self._read_at < CACHE_SECONDS or self._on_loop():
            # Fresh enough; or asked on the event loop itself, which must not wait on itself.
            return self._rows
        if self._pending is None or self._pending.done():
            self._pending = asyncio.run_coroutine_threadsafe(self._read(), self._loop)
        try:
            self._rows = self._pending.result(READ_TIMEOUT_SECONDS)
            self._read_at = time.monotonic()
        except Exception as error:  # the database is away: the last reading, and a log line
            log.warning("metrics: cannot read the job table: %s", type(error).__name__)
        return self._rows

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without their values: what registering needs (without this, the
        registry would collect at once, on the event loop that the reading itself needs)."""
        return self._families([])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._families(self._table())

    def _families(self, rows: list[Row]) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "jobqueue_jobs",
            f"Jobs in the table by queue and status (read at most every {CACHE_SECONDS:g} s).",
            labels=["queue", "status"],
        )
        lag = GaugeMetricFamily(
            "jobqueue_heartbeat_lag_seconds",
            "Age of the oldest heartbeat among the queue's RUNNING jobs (0 when none runs).",
            labels=["queue"],
        )
        waiting = GaugeMetricFamily(
            "jobqueue_oldest_runnable_age_seconds",
            "How long the oldest job that could run now has waited (0 when none).",
            labels=["queue"],
        )
        seen: dict[str, dict[str, int]] = {}
        for row in rows:
            seen.setdefault(row["queue"], {})[row["status"]] = int(row["count"])
        for queue, counts in sorted(seen.items()):
            for status in STATUSES:
                jobs.add_metric([queue, status], counts.get(status, 0))
        for queue in sorted(seen):
            queue_rows = [row for row in rows if row["queue"] == queue]
            lag.add_metric([queue], max(float(r["heartbeat_age"] or 0) for r in queue_rows))
            waiting.add_metric([queue], max(float(r["runnable_age"] or 0) for r in queue_rows))
        yield jobs
        yield lag
        yield waiting
        yield from self._pool_families()

    def _pool_families(self) -> Iterator[GaugeMetricFamily]:
        connections = GaugeMetricFamily(
            "jobqueue_db_pool_connections",
            "Each database pool's connections (hot, admin, adverts, background): open, idle, "
            "in_use.",
            labels=["pool", "state"],
        )
        most = GaugeMetricFamily(
            "jobqueue_db_pool_max_connections", "Each pool's largest size.", labels=["pool"]
        )
        waiting = GaugeMetricFamily(
            "jobqueue_db_pool_requests_waiting",
            "Calls waiting for a connection of the pool now.",
            labels=["pool"],
        )
        for name, pool in self._pools.items():
            stats = pool.get_stats()
            size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
            connections.add_metric([name, "open"], size)
            connections.add_metric([name, "idle"], idle)
            connections.add_metric([name, "in_use"], max(size - idle, 0))
            most.add_metric([name], stats.get("pool_max", 0))
            waiting.add_metric([name], stats.get("requests_waiting", 0))
        yield connections
        yield most
        yield waiting
