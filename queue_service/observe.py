"""What the queue service tells operators about itself: metrics and traces, kept out of the
servicers and the store.

- `ObservedStore` is the store with each transition counted (enqueued, claimed, completed,
  failed, released, heartbeats) and the claim's latencies measured, from the rows each statement
  returns anyway (no extra query). With tracing on, it also writes the spans that put a job's
  claim and settlement under the job's own trace (the trace context stored with the job).
- `ObservingInterceptor` times every RPC by method and status code, counts open heartbeat
  streams, and with tracing on runs each call inside a server span continuing the caller's trace.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast
from uuid import UUID

import grpc
from opentelemetry.trace import SpanKind, Status, StatusCode

from jobqueue import tracing
from queue_service import metrics
from queue_service.store import (
    Beat,
    Claimed,
    Completion,
    Enqueued,
    Failure,
    NewJob,
    Release,
    Row,
    Settled,
    Store,
)

HEARTBEAT_METHOD = "/jobqueue.v1.QueueService/Heartbeat"
WORKER_METHODS = "/jobqueue.v1.QueueService/"
# The trace contexts of jobs claimed here, kept until they settle (bounded: a job settled
# elsewhere, or never, is forgotten in time).
MAX_TRACED_JOBS = 100_000
TRACER = "queue_service"


class ObservedStore(Store):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._traced: OrderedDict[UUID, str] = OrderedDict()

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[tuple[Enqueued, Row | None]]:
        results = await super().enqueue(jobs)
        for job, (enqueued, _) in zip(jobs, results, strict=True):
            queue = job.queue or "default"
            if enqueued.already_existed:
                metrics.ENQUEUE_DUPLICATES.labels(queue).inc()
            else:
                metrics.ENQUEUED.labels(queue).inc()
        return results

    async def claim(self, worker_id: str, limit: int, queue: str) -> list[Claimed]:
        began = time.time_ns()
        rows = await super().claim(worker_id, limit, queue)
        if not rows:
            return rows
        metrics.CLAIMED.labels(queue).inc(len(rows))
        wait = metrics.CLAIM_WAIT.labels(queue)
        first = metrics.ENQUEUE_TO_START.labels(queue)
        for row in rows:
            wait.observe(max((row.locked_at - row.run_after).total_seconds(), 0.0))
            if row.attempts == 1:
                first.observe(max((row.locked_at - row.created_at).total_seconds(), 0.0))
        if tracing.enabled():
            self._claim_spans(rows, worker_id, began)
        return rows

    async def heartbeat(self, beats: Sequence[Beat]) -> list[str]:
        actions = await super().heartbeat(beats)
        for action, count in Counter(actions).items():
            metrics.HEARTBEATS.labels(action).inc(count)
        return actions

    async def complete(self, completions: Sequence[Completion]) -> list[Settled]:
        began = time.time_ns()
        settled = await super().complete(completions)
        # Counted per queue and outcome, not per entry: a batch of 100 costs a few increments.
        for (queue, outcome), count in Counter((e.queue, e.outcome) for e in settled).items():
            if outcome == "ok":
                metrics.COMPLETED.labels(queue or "").inc(count)
            else:
                metrics.SETTLE_REFUSED.labels("complete", outcome).inc(count)
        self._settle_spans("complete", settled, began)
        return settled

    async def fail(self, failures: Sequence[Failure]) -> list[Settled]:
        began = time.time_ns()
        settled = await super().fail(failures)
        for failure, entry in zip(failures, settled, strict=True):
            if entry.outcome == "ok":
                metrics.FAILED.labels(
                    entry.queue or "", entry.status or "", metrics.reason_label(failure.error_code)
                ).inc()
            else:
                metrics.SETTLE_REFUSED.labels("fail", entry.outcome).inc()
        self._settle_spans("fail", settled, began)
        return settled

    async def release(self, releases: Sequence[Release]) -> list[Settled]:
        began = time.time_ns()
        settled = await super().release(releases)
        for entry in settled:
            if entry.outcome == "ok":
                metrics.RELEASED.labels(entry.queue or "", "handed_back").inc()
            else:
                metrics.SETTLE_REFUSED.labels("release", entry.outcome).inc()
        self._settle_spans("release", settled, began)
        return settled

    async def release_stale(
        self,
        heartbeat_timeout_seconds: float,
        lock_timeout_seconds: float,
        *,
        background: bool = False,
    ) -> list[Row]:
        rows = await super().release_stale(
            heartbeat_timeout_seconds, lock_timeout_seconds, background=background
        )
        for row in rows:
            reason = str(row.get("reason") or "unknown").lower()
            metrics.RELEASED.labels(row.get("queue") or "", reason).inc()
        return rows

    # -- spans under each job's own trace ------------------------------------------------------

    def _claim_spans(self, rows: Sequence[Claimed], worker_id: str, began: int) -> None:
        tracer = tracing.tracer(TRACER)
        for row in rows:
            parent = tracing.context_of(row.trace_context or "")
            if parent is None:
                continue
            self._traced[row.id] = row.trace_context or ""
            span = tracer.start_span(
                "claim",
                context=parent,
                kind=SpanKind.INTERNAL,
                start_time=began,
                attributes={
                    "jobqueue.job_id": str(row.id),
                    "jobqueue.attempt": row.attempts,
                    "jobqueue.worker_id": worker_id,
                    "jobqueue.queue": row.queue,
                },
            )
            span.end()
        while len(self._traced) > MAX_TRACED_JOBS:
            self._traced.popitem(last=False)

    def _settle_spans(self, call: str, settled: Sequence[Settled], began: int) -> None:
        if not self._traced:
            return
        tracer = tracing.tracer(TRACER)
        for entry in settled:
            stored = self._traced.pop(entry.job_id, None)
            if stored is None:
                continue
            span = tracer.start_span(
                call,
                context=tracing.context_of(stored),
                start_time=began,
                attributes={
                    "jobqueue.job_id": str(entry.job_id),
                    "jobqueue.outcome": entry.outcome,
                    "jobqueue.status": entry.status or "",
                },
            )
            if entry.outcome != "ok":
                span.set_status(Status(StatusCode.ERROR, entry.outcome))
            span.end()


# -- every RPC ---------------------------------------------------------------------------------

Behavior = Callable[..., Any]


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """RPC latency by method and code (when metrics are on) and a server span per call (when
    tracing is on). Installed only when one of them is."""

    def __init__(self, *, metrics_on: bool) -> None:
        self._metrics_on = metrics_on

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        observe = _Observe(method, handler_call_details.invocation_metadata, self._metrics_on)
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                observe.streaming(cast(Behavior, handler.stream_stream)), **codec
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                observe.streaming(cast(Behavior, handler.unary_stream)), **codec
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                observe.unary(cast(Behavior, handler.stream_unary)), **codec
            )
        unary = cast(Behavior, handler.unary_unary)
        return grpc.unary_unary_rpc_method_handler(observe.unary(unary), **codec)


class _Observe:
    def __init__(self, method: str, metadata: Any, metrics_on: bool) -> None:
        self.method = method
        self.metadata = metadata
        self.metrics_on = metrics_on

    def _span(self) -> Any:
        if not tracing.enabled() or self.method == HEARTBEAT_METHOD:
            return None
        parent = tracing.context_from_metadata(self.metadata)
        if parent is None and self.method.startswith(WORKER_METHODS):
            return None  # a worker's poll or batch outside any trace: no trace of its own
        return tracing.tracer(TRACER).start_span(
            self.method.lstrip("/"),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.method": self.method},
        )

    def _done(self, began: float, context: grpc.aio.ServicerContext, span: Any, error: Any) -> None:
        code = _code(context, error)
        if self.metrics_on:
            metrics.RPC_DURATION.labels(self.method.lstrip("/"), code).observe(
                time.perf_counter() - began
            )
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", code)
            if code != "OK":
                span.set_status(Status(StatusCode.ERROR, code))
            span.end()

    def unary(self, behavior: Behavior) -> Behavior:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            began, span, error = time.perf_counter(), self._span(), None
            try:
                if span is None:
                    return await behavior(request, context)
                with tracing.attached(span):
                    return await behavior(request, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._done(began, context, span, error)

        return observed

    def streaming(self, behavior: Behavior) -> Behavior:
        heartbeat = self.method == HEARTBEAT_METHOD

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            began, span, error = time.perf_counter(), self._span(), None
            if heartbeat:
                metrics.HEARTBEAT_STREAMS.inc()
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as raised:
                error = raised
                raise
            finally:
                if heartbeat:
                    metrics.HEARTBEAT_STREAMS.dec()
                self._done(began, context, span, error)

        return observed


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    """The call's status code name: what the handler set or aborted with; OK; or, for anything
    else that escaped (a cancelled call), CANCELLED / UNKNOWN."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for known in grpc.StatusCode:
            if known.value[0] == code:
                return known.name
    if error is None:
        return "OK"
    if isinstance(error, BaseException) and type(error).__name__ == "CancelledError":
        return "CANCELLED"
    return "UNKNOWN"
