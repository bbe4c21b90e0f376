"""Log lines of one job, each carrying job_id, attempt and worker_id."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class JobLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with job_id, attempt and worker_id, so one job's story can be grepped."""

    def __init__(self, logger: logging.Logger, job_id: str, attempt: int, worker_id: str) -> None:
        super().__init__(logger, {"job_id": job_id, "attempt": attempt, "worker_id": worker_id})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        prefix = (
            f"job_id={extra['job_id']} attempt={extra['attempt']} worker_id={extra['worker_id']}"
        )
        return f"{prefix}: {msg}", kwargs
