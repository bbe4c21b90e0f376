"""Fixtures shared by every test folder: real PostgreSQL databases and a real queue service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from tests.support.databases import create_database, create_template, drop_database, url_for
from tests.support.grpc_server import RunningQueue, running_queue, service_config


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    name = create_template()
    yield name
    drop_database(name)


@pytest.fixture
def database_url(template_database: str) -> Iterator[str]:
    """A fresh, migrated, empty database for this test."""
    name = create_database(template=template_database)
    yield url_for(name)
    drop_database(name)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection to the test's database, for arranging and asserting rows."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def qs(database_url: str) -> AsyncIterator[RunningQueue]:
    """The queue service, in process, on a loopback port, with a client channel and stubs."""
    async with running_queue(service_config(database_url)) as running:
        yield running
