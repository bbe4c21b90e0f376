"""The checks of the names a client sends, shared by both servicers: queue names, queue filters
and worker ids, against the bounds in jobqueue.limits (documented in the .proto comments)."""

from __future__ import annotations

from jobqueue import limits
from queue_service.errors import InvalidArgument


def queue_name(name: str) -> str:
    """The queue a job goes to or a worker claims from: "default" when empty."""
    if not name:
        return limits.DEFAULT_QUEUE
    problem = limits.queue_name_problem(name)
    if problem is not None:
        raise InvalidArgument(problem, field="queue")
    return name


def queue_filter(name: str) -> str | None:
    """A filter by queue (ListJobs, GetQueueStats, ListRunningJobs): None when empty. Any name
    PostgreSQL can store, so that a queue made in psql can be listed; bounded all the same."""
    if not name:
        return None
    if len(name) > limits.MAX_QUEUE_FILTER_CHARS or "\x00" in name:
        raise InvalidArgument(
            f"queue is at most {limits.MAX_QUEUE_FILTER_CHARS} characters, without NUL",
            field="queue",
        )
    return name


def worker_id(value: str) -> str:
    """A Claim's worker_id (stored as locked_by), trimmed."""
    trimmed = value.strip()
    if (
        not trimmed
        or len(trimmed) > limits.MAX_WORKER_ID_CHARS
        or limits.CONTROL_CHARACTERS.search(trimmed)
    ):
        raise InvalidArgument(
            f"worker_id is required: 1..{limits.MAX_WORKER_ID_CHARS} characters, none of them "
            "control characters",
            field="worker_id",
        )
    return trimmed
