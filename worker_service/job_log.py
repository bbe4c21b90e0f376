"""Log lines of one job, each carrying job_id, attempt and worker_id (a text prefix, or the JSON
line's own fields with LOG_FORMAT=json)."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from jobqueue import logs


class JobLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with job_id, attempt and worker_id, so one job's story can be grepped."""

    def __init__(self, logger: logging.Logger, job_id: str, attempt: int, worker_id: str) -> None:
        super().__init__(logger, {"job_id": job_id, "attempt": attempt, "worker_id": worker_id})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        if logs.structured():  # LOG_FORMAT=json: the fields travel as fields
            kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
            return msg, kwargs
        prefix = (
            f"job_id={extra['job_id']} attempt={extra['attempt']} worker_id={extra['worker_id']}"
        )
        return f"{prefix}: {msg}", kwargs
