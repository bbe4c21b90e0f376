"""Small real pipelines for the worker's tests (the real nine stages are the pipeline's issue).

`build_pipeline()` reads the environment, as the real factory does:

- TEST_OBJECT_ROOT: a directory standing in for the bucket; `s3_key` is a path under it, and a
  missing object is a TransientError (S3_NOT_FOUND), as the checklist's Test 3 wants.
- TEST_RESULTS_DIR: where `persist` writes one record per (job, lease), so that a test can see
  which attempts got as far as persisting. `persist` also stores an advert through the queue
  service's AdvertService (the worker's sink), whose id becomes the job's ad_id.

Input keys that steer a job: `gate` (a file path: the `wait_for_gate` stage holds the job
RUNNING until the file exists or the job is told to stop), `fail` ("permanent" or "crash"),
`advert` (false: do not store an advert).
No stage sleeps to pass time; the gate waits on the stop event, so a stop is honoured at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from jobqueue.v1 import advert_service_pb2
from worker_service.pipeline.base import (
    PermanentError,
    Pipeline,
    StageContext,
    TransientError,
)

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


class WaitForGate:
    name = "wait_for_gate"

    def run(self, ctx: StageContext) -> None:
        gate = ctx.input.get("gate")
        if not gate:
            return
        ctx.progress(0.5)
        while not Path(gate).exists():
            # Wakes at once on a stop request; otherwise looks at the gate again shortly.
            if ctx.stop_event.wait(0.02):
                ctx.check_stopped()
        ctx.progress(1.0)


class Fingerprint:
    name = "fingerprint"

    def run(self, ctx: StageContext) -> None:
        fail = ctx.input.get("fail")
        if fail == "permanent":
            raise PermanentError("UNSUPPORTED_MEDIA", "not a video this pipeline can read")
        if fail == "crash":
            raise ValueError("a bug in a stage")
        data: bytes = ctx.state["data"]
        digest = hashlib.sha256()
        for start in range(0, len(data), CHUNK):
            digest.update(data[start : start + CHUNK])
            ctx.progress((start + CHUNK) / max(len(data), 1))
        ctx.state["sha256"] = digest.hexdigest()


class Persist:
    name = "persist"

    def __init__(self, results_dir: Path | None) -> None:
        self._results = results_dir

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
            ad_id, created = ctx.advert_sink.store(advert, ctx.job_id, ctx.lease)
        ctx.output.update(
            ad_id=ad_id,
            created=created,
            sha256=ctx.state["sha256"],
            bytes=record["bytes"],
            workdir=ctx.workdir,
        )
        ctx.progress(1.0)


def build_pipeline() -> Pipeline:
    root = Path(os.environ.get("TEST_OBJECT_ROOT", "."))
    results = os.environ.get("TEST_RESULTS_DIR")
    return Pipeline(
        stages=[
            ReadSource(root),
            WaitForGate(),
            Fingerprint(),
            Persist(Path(results) if results else None),
        ]
    )


STAGE_NAMES = ["read_source", "wait_for_gate", "fingerprint", "persist"]
