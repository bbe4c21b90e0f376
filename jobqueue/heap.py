"""Keeping the garbage collector's full passes short in the long-running processes.

A process of this project holds a large heap from the moment it starts: grpc, protobuf,
psycopg and their modules, hundreds of thousands of objects that live as long as it does.
CPython's oldest generation is collected when enough new long-lived objects pile up, and each
such pass walks that whole heap: 7.5 ms for the services' modules alone (bench/gc_pauses.py),
more once they run, during which no Claim is answered, no beat is written and no job is
started. A job queue's tail latency is made of such pauses.

Once a process has built what it runs on, `freeze_startup_heap` moves everything it holds into
the collector's permanent generation, which later passes skip: they walk only what was made
since. The price: a frozen object that later becomes part of an unreachable cycle is never freed.
So it is called before the process starts its tasks and calls (the queue service right after
building its server, the worker before it claims): what it freezes then is modules,
configuration and long-lived structure, which live as long as the process anyway.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once (start-up's garbage is not kept for good), then freeze what remains.
    Call it once, before the process starts its work (see the module's docstring)."""
    gc.collect()
    gc.freeze()
