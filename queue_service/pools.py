"""The queue service's database connections: one bounded pool per class of call, so that no
class can starve another, and the one translation of connection failures into domain errors.

- hot path: Claim, Heartbeat, Complete, Fail, Release, EnqueueJob(s). `DB_POOL_MIN_SIZE` ..
  `DB_POOL_MAX_SIZE` connections; a statement waits at most `DB_LOCK_WAIT_SECONDS` (2) on a row
  lock and runs at most `DB_STATEMENT_TIMEOUT_SECONDS` (10).
- admin: GetJob, ListJobs, CancelJob, RetryJob, GetQueueStats, ListRunningJobs,
  ReleaseStaleJobs. `DB_ADMIN_POOL_SIZE` (4); 5 s on a lock, 30 s in all. The writes among them
  (CancelJob, RetryJob, ReleaseStaleJobs), which may wait on a row lock, hold half of it at most.
- adverts: AdvertService. `DB_ADVERT_POOL_SIZE` (4); 5 s on a lock, 300 s in all.
- background: the stale sweep and the health ping. 2; 5 s on a lock, 60 s in all.

Twelve CancelJobs waiting on a locked row hold admin connections only (and give up after 5 s):
Claim, the heartbeats and the health check go on. The timeouts are set per connection
(`options`), so each statement carries them and one that times out fails only its own call,
with UNAVAILABLE (retryable), never the service.

Recovery after an outage (issue 11, item 8): a connection that sat idle for a second is checked
before use (one empty round trip), the first broken one seen makes the pool check all its idle
connections at once, reconnection gives up after RECONNECT_TIMEOUT_SECONDS (psycopg_pool's own
backoff doubles its delay without bound, which left a returning database unused for up to 8 s)
and the next call that needs a connection starts a fresh attempt at once, and while the
database is unreachable a call waits DOWN_WAIT_SECONDS for a connection instead of the pool's
usual wait. Availability records what the stale sweep needs to know: when the service last
could not reach the database or write beats (queue_service/reaper.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors

from queue_service.config import Config
from queue_service.errors import RowLocked, StoreBusy, StoreUnavailable

log = logging.getLogger(__name__)

# A connection used within this long worked a moment ago and is not checked again.
IDLE_CHECK_SECONDS = 1.0
# How long psycopg_pool keeps retrying a connection that fails before it gives up; the next call
# that needs one starts over at once.
RECONNECT_TIMEOUT_SECONDS = 1.0
# A call's wait for a connection while the database is known to be unreachable.
DOWN_WAIT_SECONDS = 0.5
# psycopg's connect timeout: an unreachable host (packets dropped, not refused) fails this fast.
CONNECT_TIMEOUT_SECONDS = 3


class Availability:
    """Whether the database answers, and since when it has without a break.

    `broke` is told of every call that could not reach the database and of every beat that
    could not be written; `answered` of every call that went through. The stale sweep waits
    until the service has been steady for long enough that the workers' beats have landed.
    """

    def __init__(self) -> None:
        self.reachable = True
        self._broken = False
        # Starting counts as recovering: the workers' streams reconnect to a new service.
        self._steady_since = time.monotonic()
        # Since when the database has answered without an outage (busy breaks do not count).
        self._reached_since = self._steady_since

    def broke(self, *, unreachable: bool) -> None:
        self._broken = True
        if unreachable:
            self.reachable = False

    def answered(self) -> None:
        if self._broken:
            self._broken = False
            if not self.reachable:
                self._reached_since = time.monotonic()
            self.reachable = True
            self._steady_since = time.monotonic()

    def steady_for(self) -> float:
        """Seconds since the last break ended; 0 while it lasts."""
        return 0.0 if self._broken else time.monotonic() - self._steady_since

    def reached_for(self) -> float:
        """Seconds since the database last became reachable after an outage (busy breaks, such
        as no free connection or beats not written, do not end it); 0 while it is not."""
        return time.monotonic() - self._reached_since if self.reachable else 0.0


def connection_lost(error: psycopg.OperationalError) -> bool:
    """The connection (or the server) went away, as opposed to a statement that failed."""
    state = error.sqlstate
    return state is None or state.startswith(("08", "57P"))


class Pool:
    """One class of call's connections, and the translation of their failures:
    a lost connection or no free one in time → StoreUnavailable, a lock or statement timeout →
    StoreBusy (RowLocked for a lock), each safe to retry because nothing was committed."""

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool,
        availability: Availability | None = None,
        *,
        essential: bool = False,
    ) -> None:
        self.pool = pool
        self.availability = availability or Availability()
        # The hot path and the background: a pool that cannot serve them is a break the stale
        # sweep waits out (an admin pool that is merely busy is not).
        self._essential = essential
        self._purge: asyncio.Task[None] | None = None
        # A share of the connections (`limited`): calls beyond it wait here, not in the pool.
        self._slots: asyncio.Semaphore | None = None
        self._wait = pool.timeout

    def limited(self, slots: int) -> Pool:
        """The same connections, of which this class of call holds at most `slots` at once:
        calls that may wait on a row lock (CancelJob, RetryJob) cannot take every connection
        from the reads beside them."""
        share = Pool(self.pool, self.availability, essential=self._essential)
        share._slots = asyncio.Semaphore(slots)
        return share

    @property
    def name(self) -> str:
        return self.pool.name

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._slots is None:
            async with self._connection() as conn:
                yield conn
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), self._wait)
        except TimeoutError:
            raise StoreUnavailable("database unavailable: no connection") from None
        try:
            async with self._connection() as conn:
                yield conn
        finally:
            self._slots.release()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        availability = self.availability
        wait = None if availability.reachable else DOWN_WAIT_SECONDS
        try:
            async with self.pool.connection(timeout=wait) as conn:
                yield conn
        except psycopg_pool.PoolTimeout as error:
            if self._essential:
                availability.broke(unreachable=False)
            raise StoreUnavailable("database unavailable: no connection") from error
        except errors.LockNotAvailable as error:
            raise RowLocked("a job's row is locked by another transaction; retry") from error
        except (
            errors.QueryCanceled,
            errors.DeadlockDetected,
            errors.SerializationFailure,
        ) as error:
            raise StoreBusy("the database did not answer in time; retry") from error
        except psycopg.OperationalError as error:
            if connection_lost(error):
                availability.broke(unreachable=True)
                self.purge()
            raise StoreUnavailable("database unavailable") from error
        availability.answered()

    def purge(self) -> None:
        """Check every idle connection now (in the background): one broken connection means
        the others that were open with it are broken too."""
        if self._purge is None or self._purge.done():
            self._purge = asyncio.create_task(self._check(), name=f"{self.name}-purge")

    async def _check(self) -> None:
        try:
            await self.pool.check()
        except Exception:  # a closing pool; the next call will tell
            log.debug("pool %s check failed", self.name, exc_info=True)


@dataclass(frozen=True)
class PoolSpec:
    name: str
    min_size: int
    max_size: int
    statement_timeout_seconds: float
    lock_timeout_seconds: float
    # How long a call waits for a free connection while the database answers.
    wait_seconds: float = 3.0
    essential: bool = False


def make_pool(
    database_url: str, spec: PoolSpec, availability: Availability
) -> psycopg_pool.AsyncConnectionPool:
    options = " ".join(
        (
            # UTC sessions: psycopg reads a timestamptz in UTC two to three times faster than
            # in a named zone such as the server's default Etc/UTC (the same instants either way).
            "-c TimeZone=UTC",
            f"-c statement_timeout={int(spec.statement_timeout_seconds * 1000)}",
            f"-c lock_timeout={int(spec.lock_timeout_seconds * 1000)}",
        )
    )
    used: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
        weakref.WeakKeyDictionary()
    )

    checking: list[asyncio.Task[None]] = []

    async def returned(conn: psycopg.AsyncConnection[Any]) -> None:
        used[conn] = time.monotonic()

    async def check(conn: psycopg.AsyncConnection[Any]) -> None:
        if time.monotonic() - used.get(conn, 0.0) < IDLE_CHECK_SECONDS:
            return
        try:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)
        except Exception:
            # psycopg_pool waits a second before it tries the next connection: have the pool
            # check every other idle one meanwhile, so that the next is a fresh one.
            availability.broke(unreachable=True)
            if not checking or checking[0].done():
                checking[:] = [asyncio.get_running_loop().create_task(pool.check())]
            raise

    async def unreachable(_: psycopg_pool.AsyncConnectionPool) -> None:
        availability.broke(unreachable=True)

    pool = psycopg_pool.AsyncConnectionPool(
        database_url,
        min_size=spec.min_size,
        max_size=spec.max_size,
        timeout=spec.wait_seconds,
        kwargs={
            "autocommit": True,
            "options": options,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        },
        check=check,
        reset=returned,
        reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
        reconnect_failed=unreachable,
        open=False,
        name=spec.name,
    )
    return pool


class Pools:
    """The service's four pools, sharing one Availability."""

    def __init__(self, database_url: str, specs: dict[str, PoolSpec]) -> None:
        self.availability = Availability()
        self.specs = specs
        self._pools = {
            kind: Pool(
                make_pool(database_url, spec, self.availability),
                self.availability,
                essential=spec.essential,
            )
            for kind, spec in specs.items()
        }
        self.hot = self._pools["hot"]
        self.admin = self._pools["admin"]
        self.adverts = self._pools["adverts"]
        self.background = self._pools["background"]
        # Half the admin connections at most wait on row locks; reads keep the rest.
        self.admin_writes = self.admin.limited(max(1, specs["admin"].max_size // 2))

    def __iter__(self) -> Any:
        return iter(self._pools.values())

    async def open(self) -> None:
        for pool in self:
            await pool.pool.open(wait=False)

    async def close(self) -> None:
        for pool in self:
            await pool.pool.close()

    def purge(self) -> None:
        for pool in self:
            pool.purge()


def pool_specs(config: Config) -> dict[str, PoolSpec]:
    """Each class of call's pool, sized and timed from the configuration (the table above)."""
    return {
        "hot": PoolSpec(
            "queue-service-hot",
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            statement_timeout_seconds=config.statement_timeout_seconds,
            lock_timeout_seconds=config.lock_wait_seconds,
            essential=True,
        ),
        "admin": PoolSpec(
            "queue-service-admin",
            min_size=1,
            max_size=config.admin_pool_size,
            statement_timeout_seconds=30.0,
            lock_timeout_seconds=5.0,
        ),
        "adverts": PoolSpec(
            "queue-service-adverts",
            min_size=1,
            max_size=config.advert_pool_size,
            statement_timeout_seconds=300.0,
            lock_timeout_seconds=5.0,
            wait_seconds=10.0,
        ),
        "background": PoolSpec(
            "queue-service-background",
            min_size=1,
            max_size=2,
            statement_timeout_seconds=60.0,
            lock_timeout_seconds=5.0,
            essential=True,
        ),
    }
