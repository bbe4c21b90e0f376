"""A one-stage pipeline that does nothing, for bench/peers.py.

    WORKER_PIPELINE=bench.noop_pipeline:build python -m worker_service --concurrency 10

The stage records when it started (`time.time()`, seconds since the epoch) as `started_at` in the
job's output, which Complete stores: the benchmark reads it back to measure enqueue -> handler
start latency and the drain's first start. The input is ignored (any input is accepted).
"""

from __future__ import annotations

import time
from typing import Any

try:  # the interface's home; the package itself re-exports it in some layouts
    from worker_service.pipeline.base import Pipeline
except ImportError:  # pragma: no cover - a layout where only the package exports it
    from worker_service.pipeline import Pipeline  # type: ignore[attr-defined,no-redef]


class Noop:
    name = "noop"

    def run(self, ctx: Any) -> None:
        ctx.output["started_at"] = time.time()


def build() -> Pipeline:
    return Pipeline(stages=[Noop()])
