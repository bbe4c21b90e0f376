"""What every test folder shares: real PostgreSQL databases, a real queue service, the local
OpenAI server; and the rule that tells fast tests from the rest.

A test is fast (milliseconds, no I/O) unless it or its module is marked `integration` (real
PostgreSQL, real gRPC on loopback, real processes) or `e2e` (tests/e2e: the whole system), so
`pytest -m "not integration and not e2e"` runs exactly the fast ones. A marker is easy to forget
on a new module, so a test without one that connects to anything, starts a process or serves
gRPC (its fixtures included) fails at once, saying which marker it lacks: a forgotten marker can
never hide a slow test among the fast ones.
"""

from __future__ import annotations

import functools
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import psycopg
import pytest

from tests.support.databases import create_database, create_template, drop_database, url_for
from tests.support.fake_openai import FakeOpenAI
from tests.support.grpc_server import RunningQueue, running_queue, service_config

IO_MARKERS = ("integration", "e2e")

# The node id of the fast test being set up or run; None while any other test is.
_fast_test: str | None = None


def _refused_in_fast_tests(original: Callable[..., Any], what: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _fast_test is not None:
            raise AssertionError(
                f"{_fast_test} {what}, so it is not a fast test: mark it, or its module, "
                "`pytest.mark.integration`"
            )
        return original(*args, **kwargs)

    return guarded


def pytest_configure(config: pytest.Config) -> None:
    refuse = _refused_in_fast_tests
    entry_points: list[tuple[Any, str, str]] = [
        (subprocess.Popen, "__init__", "starts a process"),
        (socket.socket, "connect", "opens a connection"),
        (socket.socket, "connect_ex", "opens a connection"),
        (psycopg, "connect", "connects to PostgreSQL"),
        (grpc, "server", "serves gRPC"),
        (grpc.aio, "server", "serves gRPC"),
    ]
    for owner, name, what in entry_points:
        setattr(owner, name, refuse(getattr(owner, name), what))
    for connection in (psycopg.Connection, psycopg.AsyncConnection):
        connect = vars(connection)["connect"].__func__  # under the classmethod
        setattr(connection, "connect", classmethod(refuse(connect, "connects to PostgreSQL")))  # noqa: B010


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _fast_test
    marked = any(item.get_closest_marker(marker) for marker in IO_MARKERS)
    _fast_test = None if marked else item.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    global _fast_test
    _fast_test = None


# -- PostgreSQL and the queue service ----------------------------------------------------------


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
def empty_database() -> Iterator[str]:
    """A database with nothing in it, not even the migrations: for tests that apply them."""
    name = create_database(prefix="jq_empty")
    try:
        yield url_for(name)
    finally:
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


# -- OpenAI ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake_openai(openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The local OpenAI-compatible server (tests/support/fake_openai.py), with no requests
    recorded or failures queued yet, named by OPENAI_BASE_URL."""
    openai_server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    return openai_server
