"""Small real pipelines for the worker's tests (the real nine stages are the pipeline's issue).

`build_pipeline(queue_addr=..., token=..., tls=...)` is called by the worker as the real
factory is (it declares the queue arguments, so the worker passes its own) and reads the rest of
its environment:

- TEST_OBJECT_ROOT: a directory standing in for the bucket; `s3_key` is a path under it, and a
  missing object is a TransientError (S3_NOT_FOUND), as the checklist's Test 3 wants.
- TEST_RESULTS_DIR: where `persist` writes one record per (job, lease), so that a test can see
  which attempts got as far as persisting. `persist` also stores an advert through the queue
  service's AdvertService (a sink this factory opens), whose id becomes the job's ad_id.

Inputs are the adverts' own shape, checked by the nine-stage pipeline's validator (a missing
`s3_key` is a permanent INVALID_INPUT before any stage runs).

Input keys that steer a job: `gate` (a file path: the `wait_for_gate` stage holds the job
RUNNING until the file exists or the job is told to stop), `fail` (see `fail_as_asked`),
`advert` (false: do not store an advert).
No stage sleeps to pass time; the gate waits on the stop event, so a stop is honoured at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobqueue.tls import ClientTls
from jobqueue.v1 import advert_service_pb2
from worker_service.pipeline.base import Pipeline, StageContext
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.errors import JobStopped, PermanentError, TransientError
from worker_service.pipeline.sources import input_check
from worker_service.providers.grpc_sink import GrpcAdvertSink
from worker_service.providers.interfaces import AdvertSink

CHUNK = 64 * 1024


def source_key(job_input: dict[str, Any]) -> str:
    if job_input.get("source_type") == "s3":
        return f"s3:{job_input['s3_key']}"
    return f"local:{job_input['path']}"


class ReadSource:
    name = "read_source"

    def __init__(self, object_root: Path) -> None:
        self._root = object_root

    def run(self, ctx: StageContext) -> None:
        if ctx.input.get("source_type") == "s3":
            path = self._root / ctx.input["s3_key"]
            if not path.is_file():
                raise TransientError("S3_NOT_FOUND", f"no object at s3 key {ctx.input['s3_key']}")
        else:
            path = Path(ctx.input["path"])
            if not path.is_file():
                raise PermanentError("SOURCE_NOT_FOUND", f"no file at {path}")
        size = path.stat().st_size
        data = bytearray()
        with path.open("rb") as source:
            while block := source.read(CHUNK):
                data.extend(block)
                ctx.progress(len(data) / size if size else 1.0)
        ctx.state["data"] = bytes(data)


def _file_exists(gate: str) -> bool:
    return Path(gate).exists()


class WaitForGate:
    """Holds a job whose input names a `gate` until it opens (by default: the file exists)."""

    name = "wait_for_gate"

    def __init__(self, is_open: Callable[[str], bool] = _file_exists) -> None:
        self._is_open = is_open

    def run(self, ctx: StageContext) -> None:
        gate = ctx.input.get("gate")
        if not gate:
            return
        ctx.progress(0.5)
        while not self._is_open(gate):
            # Wakes at once on a stop request; otherwise looks at the gate again shortly.
            if ctx.stop_event.wait(0.02):
                ctx.check_stopped()
        ctx.progress(1.0)


def fail_as_asked(ctx: StageContext) -> None:
    """Raise what the input's `fail` asks for: "permanent", "transient", "crash" (a bug), or
    "lease" (a stage's own write refused as ABORTED: the lease is gone)."""
    fail = ctx.input.get("fail")
    if fail == "permanent":
        raise PermanentError("UNSUPPORTED_MEDIA", "not a video this pipeline can read")
    if fail == "transient":
        raise TransientError("FLAKY_DEPENDENCY", "the dependency answered 503")
    if fail == "crash":
        raise ValueError("a bug in a stage")
    if fail == "lease":
        raise JobStopped(ctx.job_id)


class Fingerprint:
    name = "fingerprint"

    def run(self, ctx: StageContext) -> None:
        fail_as_asked(ctx)
        data: bytes = ctx.state["data"]
        digest = hashlib.sha256()
        for start in range(0, len(data), CHUNK):
            digest.update(data[start : start + CHUNK])
            ctx.progress((start + CHUNK) / max(len(data), 1))
        ctx.state["sha256"] = digest.hexdigest()


class Persist:
    name = "persist"

    def __init__(self, results_dir: Path | None, sink: AdvertSink) -> None:
        self._results = results_dir
        self._sink = sink

    def run(self, ctx: StageContext) -> None:
        record = {
            "job_id": ctx.job_id,
            "lease": ctx.lease,
            "sha256": ctx.state["sha256"],
            "bytes": len(ctx.state["data"]),
        }
        # The per-job workdir exists while the job runs (the worker removes it afterwards).
        (ctx.workdir / "record.json").write_text(json.dumps(record))
        if self._results is not None:
            self._results.mkdir(parents=True, exist_ok=True)
            target = self._results / f"{ctx.job_id}.{ctx.lease}.json"
            target.write_text(json.dumps(record))
        # Stored through the queue service, fenced by this job's lease, as the real persist does
        # (unless the input says `"advert": false`: then the job needs no call until Complete).
        ad_id, created = record["sha256"][:32], False
        if ctx.input.get("advert", True):
            advert = advert_service_pb2.Advert(source_key=source_key(ctx.input), job_id=ctx.job_id)
            advert.media.update({"bytes": record["bytes"], "sha256": record["sha256"]})
            ad_id, created = self._sink.store(advert, ctx.job_id, ctx.lease)
        ctx.output.update(
            ad_id=ad_id,
            created=created,
            sha256=ctx.state["sha256"],
            bytes=record["bytes"],
            workdir=ctx.workdir,
        )
        ctx.progress(1.0)


def build_pipeline(
    *, queue_addr: str, token: str | None = None, tls: ClientTls | None = None
) -> Pipeline:
    root = Path(os.environ.get("TEST_OBJECT_ROOT", "."))
    results = os.environ.get("TEST_RESULTS_DIR")
    sink = GrpcAdvertSink(queue_addr, token, tls=tls)
    return Pipeline(
        stages=[
            ReadSource(root),
            WaitForGate(),
            Fingerprint(),
            Persist(Path(results) if results else None, sink),
        ],
        # The object root stands in for the bucket.
        validate_input=input_check(PipelineConfig(s3_bucket="test-objects")),
        close=sink.close,
    )


STAGE_NAMES = ["read_source", "wait_for_gate", "fingerprint", "persist"]
