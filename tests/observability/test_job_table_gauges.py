"""The job table's gauges are read at scrape time from one grouped query, cached: any number of
scrapes within the cache period cost one statement, and a database that stops answering leaves
the last reading in place instead of failing the scrape. Fast: the store's read is a stand-in."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from queue_service import metrics
from queue_service.metrics import JobTableCollector

ROWS = [
    {"queue": "default", "status": "RUNNING", "count": 2, "heartbeat_age": 4.5, "runnable_age": 0},
    {"queue": "default", "status": "QUEUED", "count": 7, "heartbeat_age": 0, "runnable_age": 12.0},
    {"queue": "other", "status": "FAILED", "count": 1, "heartbeat_age": 0, "runnable_age": 0},
]


class Pool:
    def get_stats(self) -> dict[str, int]:
        return {"pool_size": 4, "pool_available": 1, "pool_max": 10, "requests_waiting": 3}


class Table:
    def __init__(self) -> None:
        self.reads = 0
        self.down = False

    async def read(self) -> list[dict[str, Any]]:
        self.reads += 1
        if self.down:
            raise ConnectionError("database unavailable")
        return ROWS


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The service's event loop, on its own thread (scrapes come from the HTTP server's)."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(5)
    running.close()


def scrape(collector: JobTableCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_gauges_show_the_table_and_the_pool(loop: asyncio.AbstractEventLoop) -> None:
    table = Table()
    text = scrape(JobTableCollector(table.read, {"hot": Pool()}, loop))  # type: ignore[arg-type]
    assert 'jobqueue_jobs{queue="default",status="QUEUED"} 7.0' in text
    assert 'jobqueue_jobs{queue="default",status="RUNNING"} 2.0' in text
    # Every status of a queue that has jobs is shown, 0 included.
    assert 'jobqueue_jobs{queue="default",status="SUCCEEDED"} 0.0' in text
    assert 'jobqueue_jobs{queue="other",status="FAILED"} 1.0' in text
    assert 'jobqueue_heartbeat_lag_seconds{queue="default"} 4.5' in text
    assert 'jobqueue_oldest_runnable_age_seconds{queue="default"} 12.0' in text
    assert 'jobqueue_db_pool_connections{pool="hot",state="in_use"} 3.0' in text
    assert 'jobqueue_db_pool_max_connections{pool="hot"} 10.0' in text
    assert 'jobqueue_db_pool_requests_waiting{pool="hot"} 3.0' in text


def test_scrapes_within_the_cache_period_read_the_table_once(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = Table()
    collector = JobTableCollector(table.read, {"hot": Pool()}, loop)  # type: ignore[arg-type]
    for _ in range(5):
        scrape(collector)
    assert table.reads == 1
    monkeypatch.setattr(metrics, "CACHE_SECONDS", 0.0)
    scrape(collector)
    assert table.reads == 2


def test_a_database_that_stops_answering_leaves_the_last_reading(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = Table()
    collector = JobTableCollector(table.read, {"hot": Pool()}, loop)  # type: ignore[arg-type]
    scrape(collector)
    monkeypatch.setattr(metrics, "CACHE_SECONDS", 0.0)
    table.down = True
    text = scrape(collector)
    assert table.reads == 2
    assert 'jobqueue_jobs{queue="default",status="QUEUED"} 7.0' in text


def test_registering_reads_nothing(loop: asyncio.AbstractEventLoop) -> None:
    """The service registers the collector on its event loop: describing it for the registry
    must not wait on a reading that needs that loop."""
    table = Table()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(JobTableCollector(table.read, {"hot": Pool()}, loop))  # type: ignore[arg-type]
    assert table.reads == 0
    assert "jobqueue_jobs" in registry._names_to_collectors
