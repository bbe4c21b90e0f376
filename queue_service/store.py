"""Every database operation of the queue service, and the translation of psycopg errors.

Each method is one round trip: it runs one named query from sql/queries.sql, which calls one of
the state-machine functions of migrations/job_queue/ (docs/state-machine.md). Failures leave as
domain errors (errors.py): a lost connection or an exhausted pool is StoreUnavailable, safe for
the caller to retry, because each call is a single autocommit statement that either happened or
did not.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from queue_service.errors import (
    InvalidArgument,
    InvalidTransition,
    JobNotFound,
    LeaseLost,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

Row = dict[str, Any]

QUERIES_PATH = Path(__file__).parent / "sql" / "queries.sql"


@cache
def queries() -> dict[str, str]:
    """The named queries of sql/queries.sql (`-- name: X` opens each), loaded once."""
    text = QUERIES_PATH.read_text(encoding="utf-8")
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@dataclass(frozen=True)
class NewJob:
    input: dict[str, Any]
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 0  # 0: the default
    idempotency_key: str = ""
    run_after: datetime | None = None


@dataclass(frozen=True)
class Beat:
    job_id: UUID
    lease: int
    stage: str
    progress: float


@dataclass(frozen=True)
class Completion:
    job_id: UUID
    lease: int
    output: dict[str, Any]


@dataclass(frozen=True)
class Failure:
    job_id: UUID
    lease: int
    error_code: str
    message: str
    retryable: bool
    retry_after_seconds: float | None = None


@dataclass(frozen=True)
class Release:
    job_id: UUID
    lease: int
    reason: str


@dataclass(frozen=True)
class EntryOutcome:
    job_id: UUID
    outcome: str  # ok | lease_lost | not_found
    # The job after the call when ok, as it is now when lease_lost, None when not_found.
    row: Row | None

    @property
    def status(self) -> str | None:
        return self.row["status"] if self.row else None

    @classmethod
    def from_row(cls, row: Row) -> EntryOutcome:
        job_id, outcome = row.pop("entry_job_id"), row.pop("outcome")
        return cls(job_id, outcome, row if row["id"] is not None else None)


class Store:
    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool,
        *,
        backoff_base_seconds: float = 10.0,
        backoff_max_seconds: float = 3600.0,
    ) -> None:
        self.pool = pool
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[psycopg.AsyncCursor[Row]]:
        try:
            async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                yield cur
        except psycopg_pool.PoolTimeout as error:
            raise StoreUnavailable("database unavailable: no connection") from error
        except psycopg.OperationalError as error:
            # The connection broke mid-call. The pool discards it and reconnects on demand.
            raise StoreUnavailable("database unavailable") from error
        except psycopg.DataError as error:
            # The value itself (not our SQL) was refused; say which kind, not the internals.
            detail = error.diag.message_primary or str(error).splitlines()[0]
            raise InvalidArgument(f"invalid value: {detail}") from error
        except psycopg.IntegrityError as error:
            log.warning("constraint violation: %s", error.diag.message_primary)
            raise InvalidArgument("the values break a rule of the job table") from error

    async def _all(self, name: str, params: dict[str, Any]) -> list[Row]:
        async with self._cursor() as cur:
            await cur.execute(queries()[name], params)
            return await cur.fetchall()

    async def _one(self, name: str, params: dict[str, Any]) -> Row | None:
        rows = await self._all(name, params)
        return rows[0] if rows else None

    # -- producers --------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[tuple[Row, bool]]:
        """Insert jobs idempotently; return (row, already_existed) in request order."""
        rows = await self._all(
            "enqueue",
            {
                "inputs": [Jsonb(job.input) for job in jobs],
                "queues": [job.queue for job in jobs],
                "priorities": [job.priority for job in jobs],
                "max_attempts": [job.max_attempts for job in jobs],
                "keys": [job.idempotency_key for job in jobs],
                "run_afters": [job.run_after for job in jobs],
            },
        )
        if len(rows) != len(jobs):
            # Only when a job was deleted between the insert and the read-back of its key.
            raise StoreUnavailable("enqueue raced with a deletion; retry")
        return [(row, row.pop("already_existed")) for row in rows]

    # -- workers ----------------------------------------------------------------------------

    async def claim(self, worker_id: str, limit: int, queue: str) -> list[Row]:
        return await self._all("claim", {"worker_id": worker_id, "limit": limit, "queue": queue})

    async def heartbeat(self, beats: Sequence[Beat]) -> list[str]:
        """One action per beat, in order: continue | cancel | lease_lost."""
        rows = await self._all(
            "heartbeat",
            {
                "job_ids": [b.job_id for b in beats],
                "leases": [b.lease for b in beats],
                "stages": [b.stage for b in beats],
                "progress": [b.progress for b in beats],
            },
        )
        return [row["action"] for row in rows]

    async def complete(self, completions: Sequence[Completion]) -> list[EntryOutcome]:
        rows = await self._all(
            "complete",
            {
                "job_ids": [c.job_id for c in completions],
                "leases": [c.lease for c in completions],
                "outputs": [Jsonb(c.output) for c in completions],
            },
        )
        return [EntryOutcome.from_row(row) for row in rows]

    async def fail(self, failures: Sequence[Failure]) -> list[EntryOutcome]:
        rows = await self._all(
            "fail",
            {
                "job_ids": [f.job_id for f in failures],
                "leases": [f.lease for f in failures],
                "codes": [f.error_code for f in failures],
                "messages": [f.message for f in failures],
                "retryable": [f.retryable for f in failures],
                "retry_after": [f.retry_after_seconds for f in failures],
                "backoff_base": self.backoff_base_seconds,
                "backoff_max": self.backoff_max_seconds,
            },
        )
        return [EntryOutcome.from_row(row) for row in rows]

    async def release(self, releases: Sequence[Release]) -> list[EntryOutcome]:
        rows = await self._all(
            "release",
            {
                "job_ids": [r.job_id for r in releases],
                "leases": [r.lease for r in releases],
                "reasons": [r.reason for r in releases],
            },
        )
        return [EntryOutcome.from_row(row) for row in rows]

    # -- operators --------------------------------------------------------------------------

    async def get_job(self, job_id: UUID) -> Row:
        row = await self._one("get_job", {"job_id": job_id})
        if row is None:
            raise JobNotFound(f"job {job_id} not found", job_id=str(job_id))
        return row

    async def get_jobs(self, job_ids: Sequence[UUID]) -> dict[UUID, Row]:
        rows = await self._all("get_jobs", {"job_ids": list(job_ids)})
        return {row["id"]: row for row in rows}

    async def list_jobs(
        self,
        *,
        status: str | None,
        queue: str | None,
        limit: int,
        after: tuple[datetime, UUID] | None,
    ) -> list[Row]:
        return await self._all(
            "list_jobs",
            {
                "status": status,
                "queue": queue,
                "limit": limit,
                "after_created_at": after[0] if after else None,
                "after_id": after[1] if after else None,
            },
        )

    async def cancel(self, job_id: UUID) -> tuple[Row, bool]:
        """Cancel; return (row, pending) where pending means a RUNNING job awaits its worker."""
        row = await self._transition("cancel", job_id, "cancelled")
        return row, row["status"] == "RUNNING"

    async def retry(self, job_id: UUID) -> Row:
        return await self._transition("retry", job_id, "retry")

    async def _transition(self, name: str, job_id: UUID, verb: str) -> Row:
        row = await self._one(name, {"job_id": job_id})
        assert row is not None, f"{name} returns one row"
        outcome = row.pop("outcome")
        if outcome == "not_found":
            raise JobNotFound(f"job {job_id} not found", job_id=str(job_id))
        if outcome == "wrong_state":
            raise InvalidTransition(
                f"job {job_id} is {row['status']} and cannot be {verb}",
                job_id=str(job_id),
                status=row["status"],
            )
        return row

    async def queue_stats(self, queue: str | None, heartbeat_timeout_seconds: float) -> Row:
        row = await self._one(
            "queue_stats", {"queue": queue, "heartbeat_timeout": heartbeat_timeout_seconds}
        )
        assert row is not None
        return row

    async def running_jobs(self, queue: str | None) -> list[Row]:
        return await self._all("running_jobs", {"queue": queue})

    async def release_stale(
        self, heartbeat_timeout_seconds: float, lock_timeout_seconds: float
    ) -> list[Row]:
        return await self._all(
            "release_stale",
            {"heartbeat_timeout": heartbeat_timeout_seconds, "lock_timeout": lock_timeout_seconds},
        )

    async def ping(self) -> None:
        await self._one("ping", {})


def raise_for_outcome(outcome: EntryOutcome) -> None:
    """For single-job calls: turn a batch entry's outcome into the caller's error."""
    if outcome.outcome == "not_found":
        raise JobNotFound(f"job {outcome.job_id} not found", job_id=str(outcome.job_id))
    if outcome.outcome == "lease_lost":
        raise LeaseLost(
            f"lease of job {outcome.job_id} is no longer current (job is {outcome.status})",
            job_id=str(outcome.job_id),
            status=outcome.status or "",
        )
