"""The fault suite's pipeline: a job that takes a while, then leaves a side effect.

    WORKER_PIPELINE=tests.faults.pipeline:build python -m worker_service

- `work` holds the job for FAULT_HOLD_SECONDS (default 0.2), waking at once when the worker
  tells the job to stop: it stands in for a real stage's wait on S3 or OpenAI, the time during
  which a worker can be killed, paused or cut off with a job in hand. A job run again (a lease
  after the first) holds for FAULT_REHOLD_SECONDS instead (default: the same), so that a long
  job that a fault took away need not take as long again.
- `effect` appends one line per run that got this far to FAULT_EFFECTS_DIR/<pid>.jsonl: the job,
  its lease, the worker (WORKER_ID) and the time. It is the pipeline's side effect, which the
  history checker counts: each SUCCEEDED job must have one for the lease that completed it, and
  extra ones show work done again. One file per process, so that no two writers share a file.
  With FAULT_ADVERT=1 it then stores an advert through the queue service's AdvertService under
  the job's lease, as the real `persist` stage does: a write the recording proxy sees, which
  the service must refuse once the lease is gone.

The input is not read (any ingestion input is accepted), so the jobs are ordinary adverts to
the queue service whatever input checks it applies.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from jobqueue.v1 import advert_service_pb2
from worker_service.pipeline.base import Pipeline, StageContext
from worker_service.providers.grpc_sink import GrpcAdvertSink


class Work:
    name = "work"

    def __init__(self, hold_seconds: float, rehold_seconds: float) -> None:
        self._hold = hold_seconds
        self._rehold = rehold_seconds

    def run(self, ctx: StageContext) -> None:
        ctx.progress(0.0)
        if ctx.stop_event.wait(self._hold if ctx.lease <= 1 else self._rehold):
            ctx.check_stopped()
        ctx.progress(1.0)


class Effect:
    name = "effect"

    def __init__(self, folder: Path, worker: str, sink: GrpcAdvertSink | None) -> None:
        self._path = folder / f"{os.getpid()}.jsonl"
        self._worker = worker
        self._sink = sink

    def run(self, ctx: StageContext) -> None:
        ctx.check_stopped()
        line = json.dumps(
            {"job_id": ctx.job_id, "lease": ctx.lease, "worker": self._worker, "at": time.time()}
        )
        # One write of one line with O_APPEND: a kill leaves whole lines or none.
        descriptor = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, (line + "\n").encode())
        finally:
            os.close(descriptor)
        ctx.output["effect"] = True
        if self._sink is not None:
            advert = advert_service_pb2.Advert(source_key=f"fault:{ctx.job_id}", job_id=ctx.job_id)
            ctx.output["ad_id"] = self._sink.store(advert, ctx.job_id, ctx.lease)[0]


def build(*, queue_addr: str, token: str | None = None) -> Pipeline:
    folder = Path(os.environ["FAULT_EFFECTS_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    hold = float(os.environ.get("FAULT_HOLD_SECONDS", "0.2"))
    rehold = float(os.environ.get("FAULT_REHOLD_SECONDS", str(hold)))
    sink = GrpcAdvertSink(queue_addr, token) if os.environ.get("FAULT_ADVERT") == "1" else None
    return Pipeline(
        stages=[Work(hold, rehold), Effect(folder, os.environ.get("WORKER_ID", "?"), sink)],
        close=sink.close if sink is not None else lambda: None,
    )
