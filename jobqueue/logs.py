"""How every process logs: LOG_FORMAT=text (the default, unchanged) or json.

With `json`, each record is one JSON object on one line (`time`, `level`, `logger`, `message`,
and `exc_info` for a traceback), carrying `job_id`, `attempt`, `worker_id` and `stage` where they
apply, so that a log pipeline can follow one job without parsing prose. They come from a record's
own extras (a `JobLog` line) or, for code that knows nothing of jobs (a pipeline stage, a
provider), from the job the current thread or task is working on (`job_fields`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

from jobqueue.settings import Env

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The fields of a job a line carries, in this order, when they are known.
JOB_FIELDS = ("job_id", "attempt", "worker_id", "stage")

_NO_JOB: Mapping[str, Any] = MappingProxyType({})
_job: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "job_fields", default=_NO_JOB
)
_structured = False


def log_format(values: Mapping[str, str]) -> str:
    """LOG_FORMAT, validated (a bad value stops the process like any other setting)."""
    return Env(values).choice("LOG_FORMAT", "text", FORMATS)


def configure(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Configure the root logger once, for the whole process, in `fmt` (text | json)."""
    global _structured
    _structured = fmt == "json"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if _structured else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def structured() -> bool:
    """True when lines are JSON: a job's fields then travel as fields, not as a text prefix."""
    return _structured


@contextlib.contextmanager
def job_fields(**fields: Any) -> Iterator[None]:
    """Lines logged inside (in this thread or task) carry these job fields."""
    token = _job.set({**_job.get(), **fields})
    try:
        yield
    finally:
        _job.reset(token)


def bind_job(fields: Mapping[str, Any]) -> contextvars.Token[Mapping[str, Any]]:
    """`job_fields` for a caller that cannot use a with block; undo with `unbind_job`."""
    return _job.set({**_job.get(), **fields})


def unbind_job(token: contextvars.Token[Mapping[str, Any]]) -> None:
    _job.reset(token)


def set_stage(stage: str) -> None:
    """The current job moved to `stage`: later lines in this context say so."""
    current = _job.get()
    if current:
        _job.set({**current, "stage": stage})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _job.get()
        for name in JOB_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = context.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
