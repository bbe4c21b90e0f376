"""Every database operation of the queue service, and the translation of psycopg errors.

Each method is one round trip: it runs one named query from sql/queries.sql, which calls one of
the state-machine functions of migrations/job_queue/ (docs/state-machine.md). Failures leave as
domain errors (errors.py): a lost connection or an exhausted pool is StoreUnavailable, a lock or
statement timeout StoreBusy, each safe for the caller to retry, because each call is a single
autocommit statement that either happened or did not. Each method runs on the pool of its class
of call (pools.py): the hot path, the admin calls and the background work never wait for each
other's connections.

The hot path's rows are lean named tuples (Enqueued, Claimed, Settled), read by position in the
order their query in sql/queries.sql names the columns; everything else reads whole rows as dicts.
Queries that read the job table themselves (rather than through a state-machine function) are
planned at each call, never prepared: a prepared plan made while the table was small would stay
in use as it grows (docs/state-machine.md, "Plans").
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
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import RowFactory, args_row, dict_row, tuple_row

from queue_service.auth import Caller
from queue_service.errors import (
    InvalidArgument,
    InvalidTransition,
    JobNotFound,
    LeaseLost,
    RowLocked,
    StoreUnavailable,
)
from queue_service.pools import Pool, Pools

log = logging.getLogger(__name__)

Row = dict[str, Any]
R = TypeVar("R")

# Top-level queries that read the job table: planned at each call (see the module's docstring).
UNPREPARED = frozenset(
    {"get_job", "get_jobs", "list_jobs", "queue_stats", "running_jobs", "next_due", "job_table"}
) | {"prune_finished"}

QUERIES_PATH = Path(__file__).parent / "sql" / "queries.sql"


@cache
def queries() -> dict[str, str]:
    """The named queries of sql/queries.sql (`-- name: X` opens each), loaded once."""
    text = QUERIES_PATH.read_text(encoding="utf-8")
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    named = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    named["enqueue_traced"] = _traced(named["enqueue"])
    return named


def _traced(enqueue: str) -> str:
    """The enqueue statement around 011's enqueue_jobs_traced, which takes the trace contexts
    after enqueue_jobs's arguments. (One statement switching between the two by a parameter
    cost every enqueue ~0.15 ms more.)"""
    last_argument = "%(run_afters)b::timestamptz[])"
    if not enqueue.count("enqueue_jobs(") == enqueue.count(last_argument) == 1:
        raise RuntimeError("sql/queries.sql: enqueue must call enqueue_jobs(...) once")
    return enqueue.replace("enqueue_jobs(", "enqueue_jobs_traced(").replace(
        last_argument, "%(run_afters)b::timestamptz[], %(trace_contexts)b::text[])"
    )


class NewJob(NamedTuple):
    # The JSON text of the input object, whole numbers written as integers (convert.struct_json).
    input_json: str
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 0  # 0: the default
    idempotency_key: str = ""
    run_after: datetime | None = None
    # The W3C traceparent of the call that enqueued it, kept with the job ("" without tracing).
    trace_context: str = ""
    # Who enqueued it, for its audit entry (written by the enqueue's own statement); None: none.
    enqueued_by: Caller | None = None


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
    output_json: str


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


class Enqueued(NamedTuple):
    """An enqueued entry: the caller sent everything else of a new job."""

    job_id: str
    already_existed: bool
    status: str
    max_attempts: int
    idempotency_key: str
    run_after: datetime
    created_at: datetime


class Claimed(NamedTuple):
    """A claimed job: every column but output and errors (the claim query says why)."""

    id: UUID
    queue: str
    status: str
    priority: int
    attempts: int
    max_attempts: int
    run_after: datetime
    locked_at: datetime
    locked_by: str
    input: dict[str, Any]
    idempotency_key: str
    last_error: str | None
    error_code: str | None
    stage: str
    progress: float
    created_at: datetime
    lease: int
    trace_context: str | None = None


class Settled(NamedTuple):
    """One entry of a complete, fail or release: its outcome (ok | lease_lost | not_found |
    locked: settle.sql) and the job after the call (as it is now when lease_lost, as last
    committed when locked; all None when not_found)."""

    job_id: UUID
    outcome: str
    status: str | None
    queue: str | None
    attempts: int | None
    max_attempts: int | None
    lease: int | None
    stage: str | None
    progress: float | None
    error_code: str | None
    last_error: str | None
    run_after: datetime | None
    locked_by: str | None
    completed_at: datetime | None
    updated_at: datetime | None


class Store:
    def __init__(
        self,
        pools: Pools,
        *,
        backoff_base_seconds: float = 10.0,
        backoff_max_seconds: float = 3600.0,
    ) -> None:
        self.pools = pools
        self.availability = pools.availability
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds

    @asynccontextmanager
    async def _cursor(self, pool: Pool) -> AsyncIterator[psycopg.AsyncCursor[Row]]:
        try:
            async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                yield cur
        except psycopg.DataError as error:
            # The value itself (not our SQL) was refused; say which kind, not the internals.
            detail = error.diag.message_primary or str(error).splitlines()[0]
            raise InvalidArgument(f"invalid value: {detail}") from error
        except psycopg.IntegrityError as error:
            log.warning("constraint violation: %s", error.diag.message_primary)
            raise InvalidArgument("the values break a rule of the job table") from error

    async def _all(self, name: str, params: dict[str, Any], pool: Pool | None = None) -> list[Row]:
        return await self._rows(name, params, dict_row, pool=pool or self.pools.admin)

    async def _rows(
        self,
        name: str,
        params: dict[str, Any],
        row_factory: RowFactory[R],
        *,
        binary: bool = False,
        pool: Pool | None = None,
    ) -> list[R]:
        """The rows of a named query, on `pool` (the hot path's unless said); `binary` rows
        parse faster (the hot path's)."""
        async with self._cursor(pool or self.pools.hot) as cur:
            cur.row_factory = row_factory  # type: ignore[assignment]
            await cur.execute(
                queries()[name],
                params,
                prepare=False if name in UNPREPARED else None,
                binary=binary,
            )
            return await cur.fetchall()  # type: ignore[return-value]

    async def _one(self, name: str, params: dict[str, Any], pool: Pool | None = None) -> Row | None:
        rows = await self._all(name, params, pool)
        return rows[0] if rows else None

    # -- producers --------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[tuple[Enqueued, Row | None]]:
        """Insert jobs idempotently, each with the audit entry of whoever enqueued it; in request
        order, each entry's outcome, with the whole row of a job that already existed (a new one
        is what the caller sent)."""
        callers = [job.enqueued_by for job in jobs]
        # With tracing on, each new job keeps the trace context it was enqueued in (011).
        traced = any(job.trace_context for job in jobs)
        rows = await self._rows(
            "enqueue_traced" if traced else "enqueue",
            {
                "inputs": [job.input_json for job in jobs],
                "queues": [job.queue for job in jobs],
                "priorities": [job.priority for job in jobs],
                "max_attempts": [job.max_attempts for job in jobs],
                "keys": [job.idempotency_key for job in jobs],
                "run_afters": [job.run_after for job in jobs],
                **({"trace_contexts": [job.trace_context for job in jobs]} if traced else {}),
                "roles": [caller and caller.role for caller in callers],
                "credentials": [caller and caller.credential for caller in callers],
                "operators": [caller and caller.operator for caller in callers],
            },
            args_row(Enqueued),
            binary=True,
        )
        known = {UUID(row.job_id) for row in rows if row.already_existed and row.job_id}
        existing = (
            {str(k): v for k, v in (await self.get_jobs(list(known), hot=True)).items()}
            if known
            else {}
        )
        if any(row.job_id is None for row in rows) or len(existing) < len(set(known)):
            # Only when a job was deleted between the insert and the read-back of its key, or
            # while a deploy re-applies 004 before 007 (the key is taken in another queue).
            raise StoreUnavailable("enqueue raced with a deletion; retry")
        return [(row, existing.get(row.job_id) if row.already_existed else None) for row in rows]

    # -- workers ----------------------------------------------------------------------------

    async def claim(self, worker_id: str, limit: int, queue: str) -> list[Claimed]:
        return await self._rows(
            "claim",
            {"worker_id": worker_id, "limit": limit, "queue": queue},
            args_row(Claimed),
            binary=True,
        )

    async def next_due(self, queues: Sequence[str]) -> dict[str, float]:
        """Seconds until the next job of each queue comes due, for queues that have one."""
        rows = await self._rows("next_due", {"queues": list(queues)}, tuple_row)
        return {queue: due_in for queue, due_in in rows}

    async def heartbeat(self, beats: Sequence[Beat]) -> list[str]:
        """One action per beat, in order: continue | cancel | lease_lost | deferred (its row was
        locked: heartbeat.sql). Beats that could not be written are a break the stale sweep
        waits out (reaper.py)."""
        try:
            return await self._heartbeat(beats)
        except StoreUnavailable:
            self.availability.broke(unreachable=False)
            raise

    async def _heartbeat(self, beats: Sequence[Beat]) -> list[str]:
        rows = await self._rows(
            "heartbeat",
            {
                "job_ids": [b.job_id for b in beats],
                "leases": [b.lease for b in beats],
                "stages": [b.stage for b in beats],
                "progress": [b.progress for b in beats],
            },
            tuple_row,
            binary=True,
        )
        return [action for (action,) in rows]

    async def complete(self, completions: Sequence[Completion]) -> list[Settled]:
        return await self._rows(
            "complete",
            {
                "job_ids": [c.job_id for c in completions],
                "leases": [c.lease for c in completions],
                "outputs": [c.output_json for c in completions],
            },
            args_row(Settled),
            binary=True,
        )

    async def fail(self, failures: Sequence[Failure]) -> list[Settled]:
        return await self._rows(
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
            args_row(Settled),
            binary=True,
        )

    async def release(self, releases: Sequence[Release]) -> list[Settled]:
        return await self._rows(
            "release",
            {
                "job_ids": [r.job_id for r in releases],
                "leases": [r.lease for r in releases],
                "reasons": [r.reason for r in releases],
            },
            args_row(Settled),
            binary=True,
        )

    # -- operators --------------------------------------------------------------------------

    async def get_job(self, job_id: UUID) -> Row:
        row = await self._one("get_job", {"job_id": job_id})
        if row is None:
            raise JobNotFound(f"job {job_id} not found", job_id=str(job_id))
        return row

    async def get_jobs(self, job_ids: Sequence[UUID], *, hot: bool = False) -> dict[UUID, Row]:
        pool = self.pools.hot if hot else self.pools.admin
        rows = await self._all("get_jobs", {"job_ids": list(job_ids)}, pool)
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
        row = await self._one(name, {"job_id": job_id}, self.pools.admin_writes)
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

    async def job_table(self) -> list[Row]:
        """Jobs by queue and status, with the oldest heartbeat and runnable wait of each: what
        the metrics' gauges show (a whole-table count, so callers cache it)."""
        return await self._all("job_table", {}, self.pools.background)

    async def running_jobs(
        self, queue: str | None, *, limit: int, after: tuple[datetime, UUID] | None
    ) -> list[Row]:
        return await self._all(
            "running_jobs",
            {
                "queue": queue,
                "limit": limit,
                "after_locked_at": after[0] if after else None,
                "after_id": after[1] if after else None,
            },
        )

    async def prune_finished(self, status: str, age_seconds: float, batch: int) -> int:
        """Delete up to `batch` jobs in `status` that finished `age_seconds` ago or earlier;
        how many it deleted."""
        row = await self._one(
            "prune_finished",
            {"status": status, "age": age_seconds, "batch": batch},
            self.pools.background,
        )
        assert row is not None
        return int(row["deleted"])

    async def prune_audit(self, age_seconds: float, batch: int) -> int:
        """Delete up to `batch` audit entries written `age_seconds` ago or earlier, oldest first;
        how many it deleted."""
        row = await self._one(
            "prune_audit", {"age": age_seconds, "batch": batch}, self.pools.background
        )
        assert row is not None
        return int(row["deleted"])

    async def fold_counts(self) -> int:
        row = await self._one("fold_counts", {}, self.pools.background)
        assert row is not None
        return int(row["folded"])

    async def release_stale(
        self,
        heartbeat_timeout_seconds: float,
        lock_timeout_seconds: float,
        *,
        background: bool = False,
    ) -> list[Row]:
        """The stale sweep; `background` for the reaper's own, on the background pool."""
        return await self._all(
            "release_stale",
            {"heartbeat_timeout": heartbeat_timeout_seconds, "lock_timeout": lock_timeout_seconds},
            self.pools.background if background else self.pools.admin_writes,
        )

    async def release_lost(
        self, jobs: Sequence[tuple[UUID, int]], silent_seconds: Sequence[float]
    ) -> list[tuple[UUID, int, str]]:
        """Release the jobs (id, lease) of heartbeat streams that broke, each `silent_seconds`
        ago, that nothing beat since (release_lost_jobs, migrations/010_worker_lost.sql); the
        (id, lease, status) of each job released."""
        return await self._rows(
            "release_lost",
            {
                "job_ids": [job_id for job_id, _ in jobs],
                "leases": [lease for _, lease in jobs],
                "silent": list(silent_seconds),
            },
            tuple_row,
            binary=True,
        )

    async def ping(self) -> None:
        await self._one("ping", {}, self.pools.background)


def raise_for_outcome(settled: Settled) -> None:
    """For single-job calls: turn a batch entry's outcome into the caller's error."""
    if settled.outcome == "not_found":
        raise JobNotFound(f"job {settled.job_id} not found", job_id=str(settled.job_id))
    if settled.outcome == "lease_lost":
        raise LeaseLost(
            f"lease of job {settled.job_id} is no longer current (job is {settled.status})",
            job_id=str(settled.job_id),
            status=settled.status or "",
        )
    if settled.outcome == "locked":
        raise RowLocked(
            f"job {settled.job_id}'s row is locked by another transaction; nothing changed, retry"
        )
