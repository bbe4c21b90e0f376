"""What a full garbage-collector pass costs in a process holding the services' start-up heap.

    .venv/bin/python bench/gc_pauses.py [--passes 20]

Imports what the queue service and the worker import at start-up (grpc, protobuf, psycopg, the
generated stubs, both services' modules), then times full collections (`gc.collect()`, what
CPython runs when enough long-lived objects pile up): first as a process starts, then after
jobqueue.heap.freeze_startup_heap, which both services call once they have started. The
collector's pass stops the whole process, every Claim, beat and job start with it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The heaps the queue service and the worker start with.
import queue_service.__main__
import queue_service.server  # noqa: F401
import worker_service.cli  # noqa: F401
from jobqueue import heap


def full_passes(passes: int) -> float:
    """The median milliseconds of `passes` full collections."""
    samples = []
    for _ in range(passes):
        started = time.perf_counter()
        gc.collect()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    tracked = len(gc.get_objects())
    before = full_passes(args.passes)
    heap.freeze_startup_heap()
    after = full_passes(args.passes)
    walked = len(gc.get_objects())
    print(f"objects a full pass walks: {tracked:,} before the freeze, {walked:,} after it")
    print(
        f"full pass: p50 {before:.2f} ms before the freeze, {after * 1000:.1f} us after it "
        "(of the start-up heap: a running process's passes walk what it made since)"
    )


if __name__ == "__main__":
    main()
