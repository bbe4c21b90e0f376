"""The audit trail of admin actions: who enqueued, cancelled, retried or released what, when,
and with which outcome (table admin_audit, migrations/012_security.sql).

AdminService methods are wrapped in `audited(action)`, which records one entry per job the
call touched once the call has an answer, refusals included (a cancel of a finished job is
recorded as FAILED_PRECONDITION:INVALID_TRANSITION). The caller is the one queue_service/auth.py
admitted: its role, the name of its credential, and the operator a trusted gateway named.
Entries that arrive together are written by one statement (batching.Coalescer). GetJob shows a
job's trail.

An enqueue writes its entries in its own statement (queue_service/sql/queries.sql, `enqueue`):
the job and its entry commit together, at no extra round trip on the hot admin call. The other
actions' entries are written after the action, not in its transaction: the state machine's
functions stay as they are. If the database fails between the two, the action stands and the
server log has the entry that could not be written (at ERROR, with job, action and caller).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from jobqueue.rpc import timestamp
from jobqueue.v1 import job_pb2
from queue_service.auth import current_caller
from queue_service.batching import Coalescer
from queue_service.errors import DomainError
from queue_service.pools import Pool

log = logging.getLogger(__name__)

QUERIES_PATH = Path(__file__).parent / "sql" / "audit.sql"


@cache
def queries() -> dict[str, str]:
    text = QUERIES_PATH.read_text(encoding="utf-8")
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@dataclass(frozen=True)
class Entry:
    action: str
    job_id: str | None
    role: str
    credential: str
    operator: str
    outcome: str


class AuditLog:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._writes: Coalescer[Entry, None] = Coalescer(self._write)

    def start(self) -> None:
        self._writes.start()

    async def stop(self) -> None:
        await self._writes.stop()

    async def record(self, action: str, outcomes: Iterable[tuple[str | None, str]]) -> None:
        """One entry per (job, outcome) for the current caller, written together; never raises
        (the action already ran)."""
        caller = current_caller.get()
        entries = [
            Entry(action, job_id, caller.role, caller.credential, caller.operator, outcome)
            for job_id, outcome in outcomes
        ]
        futures = [self._writes.submit_nowait(entry) for entry in entries]
        for entry, future in zip(entries, futures, strict=True):
            try:
                await future
            except Exception as error:  # the database failed after the action ran
                log.error("audit entry not written (%s): %s", type(error).__name__, entry)

    async def _write(self, entries: Sequence[Entry]) -> list[None]:
        async with self._pool.connection() as conn:
            await conn.execute(
                queries()["record"], {"entries": Jsonb([asdict(e) for e in entries])}
            )
        return [None] * len(entries)

    async def trail(self, job_id: UUID) -> list[job_pb2.AuditEntry]:
        # The pool turns a lost connection or a timeout into StoreUnavailable / StoreBusy.
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(queries()["trail"], {"job_id": job_id})
            rows = await cur.fetchall()
        return [
            job_pb2.AuditEntry(
                at=timestamp(row["at"]),
                action=row["action"],
                role=row["role"],
                credential=row["credential"],
                operator=row["operator"],
                outcome=row["outcome"],
            )
            for row in rows
        ]


T = TypeVar("T")


def refusal(error: BaseException) -> str:
    if isinstance(error, DomainError):
        return f"{error.code.name}:{error.reason}"
    return "INTERNAL"


def audited(
    action: str,
    touched: Callable[[Any, Any], list[tuple[str | None, str]]] | None,
    request_job: Callable[[Any], str | None] = lambda request: None,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Record `action` for an AdminService method: `touched(request, response)` names the jobs
    and outcomes of an answered call (None: the action's own statement wrote them, as an enqueue
    does); a refused call is recorded against `request_job(request)`
    (when it names a well-formed job) with the refusal's code and reason. Goes inside
    `grpc_errors`, so that it sees the domain error before it becomes a status."""

    def decorate(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: Any) -> T:
            audit: AuditLog = self.audit
            try:
                response = await method(self, request, context)
            except Exception as error:
                await audit.record(action, [(_job_or_none(request_job(request)), refusal(error))])
                raise
            if touched is not None:
                await audit.record(action, touched(request, response))
            return response

        return wrapper

    return decorate


def _job_or_none(value: str | None) -> str | None:
    """A job id worth a row: a well-formed UUID (a malformed one is recorded without a job)."""
    if not value:
        return None
    try:
        return str(UUID(value))
    except ValueError:
        return None
