"""The gateway under test: the real `python -m gateway` in front of the real
`python -m queue_service` and a fresh PostgreSQL database.

`stack` gives each test its own database and processes (for tests that count rows);
`shared_stack` is one set per module for the many tests that must change nothing anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.databases import create_database, drop_database, url_for
from tests.support.processes import Process, gateway_process, queue_service_process

ADMIN_KEY = "test-admin-key-0123456789"


@dataclass
class Stack:
    gateway: Process
    queue: Process | None
    base_url: str
    http: httpx.Client
    db: psycopg.Connection[Any]

    def job_count(self) -> int:
        row = self.db.execute("SELECT count(*) FROM ingestion_jobs").fetchone()
        assert row is not None
        return int(row[0])


# Short enough that a test of a queue service that does not answer ends in seconds.
# The auth tests send hundreds of wrong keys from one address: the key-guessing throttle
# (tests/gateway/test_hardening.py proves it) would answer them 429 instead of 401.
GATEWAY_ENV = {"GATEWAY_GRPC_TIMEOUT_SECONDS": "5", "GATEWAY_AUTH_FAILURE_LIMIT": "100000"}


def gateway_under_test(
    queue_addr: str, **extra_env: str
) -> AbstractContextManager[tuple[Process, str]]:
    """The gateway under test in front of `queue_addr`: `python -m gateway` with ADMIN_KEY,
    waited on until it listens; yields it and its base URL."""
    return gateway_process(queue_addr, ADMIN_KEY, **{**GATEWAY_ENV, **extra_env})


@contextmanager
def running_stack(
    database_url: str, queue_env: dict[str, str] | None = None, **gateway_extra: str
) -> Iterator[Stack]:
    with (
        queue_service_process(database_url, **(queue_env or {})) as queue,
        gateway_under_test(f"127.0.0.1:{queue.port}", **gateway_extra) as (gateway, base_url),
        httpx.Client(base_url=base_url, headers={"X-Admin-Key": ADMIN_KEY}, timeout=15) as http,
        psycopg.connect(database_url, autocommit=True) as db,
    ):
        yield Stack(gateway=gateway, queue=queue, base_url=base_url, http=http, db=db)


@pytest.fixture
def stack(database_url: str) -> Iterator[Stack]:
    with running_stack(database_url) as running:
        yield running


@pytest.fixture(scope="module")
def shared_stack(template_database: str) -> Iterator[Stack]:
    name = create_database(template=template_database)
    try:
        with running_stack(url_for(name)) as running:
            yield running
    finally:
        drop_database(name)
