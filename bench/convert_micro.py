"""The queue service's Python cost per job on the hot path, without a database or a network.

    .venv/bin/python bench/convert_micro.py [--jobs 100] [--repeat 7]

Times what a drain's Claim and CompleteBatch do per job in the service, on the rows and
requests a drain carries (bench/noop_pipeline.py's output, bench/project_client.py's input):

- claim answer: a ClaimResponse of --jobs claimed rows filled and serialized (queue._fill_answer,
  convert.fill_claimed);
- complete batch: a CompleteBatchRequest of --jobs entries parsed from its wire bytes and read
  into store entries (queue._completion), and its answer built and serialized (queue._results).

Each figure is the best of --repeat runs, in microseconds per job: a guide for changes to
convert.py and queue.py, not a figure of the whole service (bench/peers.py's drain is).
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobqueue.v1 import queue_service_pb2 as pb
from queue_service import queue
from queue_service.store import Claimed, Settled


def claimed_rows(count: int) -> list[Claimed]:
    now = datetime.now(UTC)
    return [
        Claimed(
            id=uuid.uuid4(),
            queue="default",
            status="RUNNING",
            priority=0,
            attempts=1,
            max_attempts=3,
            run_after=now - timedelta(seconds=2),
            locked_at=now,
            locked_by="bench-worker-1234",
            input={"source_type": "s3", "s3_key": f"bench/{i}.mp4"},
            idempotency_key=f"{i:064x}",
            last_error=None,
            error_code=None,
            stage="",
            progress=0.0,
            created_at=now - timedelta(seconds=3),
            lease=i + 1,
        )
        for i in range(count)
    ]


def complete_batch(count: int) -> bytes:
    request = pb.CompleteBatchRequest()
    for i in range(count):
        entry = request.entries.add(job_id=str(uuid.uuid4()), lease=i + 1)
        entry.output.update({"started_at": time.time(), "stage_timings": {"noop": 1.2e-05}})
    return request.SerializeToString()


def settled(request: pb.CompleteBatchRequest) -> list[Settled]:
    fields = dict.fromkeys(Settled._fields)
    return [
        Settled(**{**fields, "job_id": uuid.UUID(e.job_id), "outcome": "ok", "status": "SUCCEEDED"})
        for e in request.entries
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs per call")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rows = claimed_rows(args.jobs)
    wire = complete_batch(args.jobs)
    outcomes = settled(pb.CompleteBatchRequest.FromString(wire))

    def claim() -> None:
        response = pb.ClaimResponse()
        queue._fill_answer(response, rows)
        response.SerializeToString()

    def complete() -> None:
        request = pb.CompleteBatchRequest.FromString(wire)
        [queue._completion(entry) for entry in request.entries]
        response = pb.CompleteBatchResponse()
        queue._fill_results(response.results, outcomes)
        response.SerializeToString()

    cases: dict[str, Callable[[], None]] = {"claim answer": claim, "complete batch": complete}
    for name, case in cases.items():
        number = max(1, 20_000 // args.jobs)
        best = min(timeit.repeat(case, number=number, repeat=args.repeat))
        print(f"{name:>15}: {best / number / args.jobs * 1e6:6.2f} us/job")


if __name__ == "__main__":
    main()
