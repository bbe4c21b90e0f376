"""When the stale sweep may run: never until the service has reached the database and written
every beat for one heartbeat interval plus a margin (queue_service/reaper.py)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from queue_service.config import Config
from queue_service.pools import Availability, connection_lost
from queue_service.reaper import Reaper


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("queue_service.pools.time.monotonic", clock)
    return clock


class StoreOf:
    def __init__(self, availability: Availability) -> None:
        self.availability = availability


def reaper(availability: Availability, heartbeat_timeout: float = 120) -> Reaper:
    config = Config(
        database_url="postgresql://x@y/z",
        heartbeat_interval_seconds=5,
        stale_sweep_margin_seconds=5,
        heartbeat_timeout_seconds=heartbeat_timeout,
    )
    store: Any = StoreOf(availability)
    return Reaper(store, config)


def test_the_sweep_waits_after_the_service_starts(clock: Clock) -> None:
    sweep = reaper(Availability())
    assert sweep.holding() == 10
    clock.now += 9.5
    assert sweep.holding() == pytest.approx(0.5)
    clock.now += 0.5
    assert sweep.holding() == 0


def test_the_sweep_waits_out_an_outage_from_its_end(clock: Clock) -> None:
    availability = Availability()
    sweep = reaper(availability)
    clock.now += 60
    assert sweep.holding() == 0

    availability.broke(unreachable=True)
    assert not availability.reachable
    clock.now += 30  # however long the outage lasts, the sweep waits
    assert sweep.holding() == 10
    availability.answered()  # the database is back
    assert availability.reachable
    clock.now += 9
    assert sweep.holding() == pytest.approx(1)
    clock.now += 1
    assert sweep.holding() == 0


def test_a_lost_beat_holds_the_sweep_like_an_outage(clock: Clock) -> None:
    availability = Availability()
    sweep = reaper(availability)
    clock.now += 60
    availability.broke(unreachable=False)  # a heartbeat statement failed; the database answers
    assert availability.reachable
    assert sweep.holding() == 10
    availability.answered()
    clock.now += 10
    assert sweep.holding() == 0


def test_the_hold_is_capped_under_sustained_overload(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # Review finding 7: every busy moment (no free connection, a heartbeat batch that failed)
    # started the hold again, so under sustained overload the sweep never ran.
    availability = Availability()
    sweep = reaper(availability, heartbeat_timeout=30)
    clock.now += 60
    assert sweep.due()
    caplog.set_level(logging.INFO, "queue_service.reaper")
    verdicts = []
    for _ in range(20):  # a busy break every 2 s for 40 s; the database answers throughout
        availability.broke(unreachable=False)
        availability.answered()
        clock.now += 2
        verdicts.append(sweep.due())
    # Held for 30 s from the first check that saw it, then the sweep runs anyway, each time.
    assert verdicts == [False] * 15 + [True] * 5
    capped = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(capped) == 1 and "held for 30.0 s" in capped[0].getMessage()

    clock.now += 10  # steady again: the hold ends, and the next one starts afresh
    assert sweep.due()
    availability.broke(unreachable=False)
    assert not sweep.due()
    assert "resumed after 48.0 s" in caplog.text


def test_an_outage_does_not_count_towards_the_cap(clock: Clock) -> None:
    availability = Availability()
    sweep = reaper(availability, heartbeat_timeout=6)  # shorter than the hold itself (10 s)
    clock.now += 60
    availability.broke(unreachable=True)
    for _ in range(20):  # 20 s without the database
        clock.now += 1
        assert not sweep.due()
    availability.answered()  # back: the workers' beats need the whole hold to land
    for second in range(1, 13):
        availability.broke(unreachable=False)  # and it is busy, every second
        availability.answered()
        clock.now += 1
        assert sweep.due() == (second >= 10), second


@pytest.mark.parametrize(
    ("sqlstate", "lost"),
    [
        (None, True),  # the socket broke: no server error at all
        ("57P01", True),  # admin_shutdown: the server is stopping
        ("08006", True),  # connection_failure
        ("55P03", False),  # lock_not_available: one statement, the connection is fine
        ("57014", False),  # query_canceled: a statement timeout
    ],
)
def test_only_a_broken_connection_counts_as_the_database_gone(
    sqlstate: str | None, lost: bool
) -> None:
    error = psycopg.errors.lookup(sqlstate)("x") if sqlstate else psycopg.OperationalError("x")
    assert connection_lost(error) is lost
