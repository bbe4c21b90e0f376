"""Domain errors and their one mapping to gRPC status codes.

The store raises these; servicer methods are wrapped in `grpc_errors`, which turns each into its
status code with a google.rpc.ErrorInfo (`reason`, domain `jobqueue.v1`) attached, so that
clients read the code and the reason, never the message. Anything unexpected becomes INTERNAL
with a generic message: stack traces, SQL and connection strings stay in the server log.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from jobqueue.rpc import ERROR_DOMAIN

log = logging.getLogger(__name__)


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class JobNotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "JOB_NOT_FOUND"


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class InvalidTransition(DomainError):
    """The job's status forbids the action (cancel a SUCCEEDED job, retry a RUNNING one)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "INVALID_TRANSITION"


class LeaseLost(DomainError):
    """The caller's lease is no longer current: the job was released, re-claimed or finished."""

    code = grpc.StatusCode.ABORTED
    reason = "LEASE_LOST"


class AdvertHeld(DomainError):
    """StoreAdvert for a source whose advert another job, still running, stored."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "ADVERT_HELD"


class StoreUnavailable(DomainError):
    """The database cannot be reached. Nothing changed; the call is safe to retry."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "DATABASE_UNAVAILABLE"


class StoreBusy(StoreUnavailable):
    """A statement ran out of its time (statement_timeout, a deadlock broken): it changed
    nothing, and the call is safe to retry."""

    reason = "DATABASE_BUSY"


class RowLocked(StoreBusy):
    """A job's row is held by another transaction (an operator's open transaction, a StoreAdvert
    in progress) past the short wait a settle gives it (settle.sql, settle_wait_for_locks), or a
    statement waited its lock_timeout. Caused by one job, not by the database: a batch answers
    that entry `locked` and settles the rest, so only that job's caller hears it."""

    reason = "ROW_LOCKED"


def to_status(error: DomainError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
    )
    status = status_pb2.Status(code=getattr(code_pb2, error.code.name), message=error.message)
    status.details.add().Pack(info)
    return rpc_status.to_status(status)


T = TypeVar("T")
Handler = Callable[..., Awaitable[T]]


def grpc_errors(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Wrap a unary servicer method: domain errors become their status, the rest INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except DomainError as error:
            await context.abort_with_status(to_status(error))  # type: ignore[attr-defined]
        except Exception:
            log.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        raise AssertionError("unreachable: abort raises")

    return wrapper


def grpc_stream_errors(
    method: Callable[..., AsyncIterator[T]],
) -> Callable[..., AsyncIterator[T]]:
    """The same mapping for a streaming servicer method (an async generator)."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[T]:
        try:
            async for item in method(self, request, context):
                yield item
        except DomainError as error:
            await context.abort_with_status(to_status(error))  # type: ignore[attr-defined]
        except Exception:
            log.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return wrapper
