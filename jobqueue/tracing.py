"""OpenTelemetry traces across every hop, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.

One advert's whole life is one trace: the gateway's REST request -> its AdminService call (the
W3C `traceparent` travels in the call's metadata) -> the job, which keeps the trace context of the
call that enqueued it (column `trace_context`, migration 011) -> the worker's claim and one span
per stage -> Complete. The queue service adds its own spans for each RPC and, under the job's
trace, for the job's claim and settlement.

Switched off, nothing here costs anything on the hot path: no interceptor is installed on a
channel or a server, and `traceparent()` answers "" without touching OpenTelemetry. Exporting is
OTLP over gRPC, configured by the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
_propagator = TraceContextTextMapPropagator()
_provider: trace.TracerProvider | None = None


def setup(service_name: str, values: Mapping[str, str]) -> bool:
    """Export this process's spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (or
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); True if tracing is now on. Called once, by a process's
    main, before it opens channels or builds its server."""
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not any(values.get(name) for name in endpoints):
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, win over the default name.
    resource = Resource.create({"service.name": service_name}).merge(Resource.create())
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use(provider)
    return True


def use(provider: trace.TracerProvider | None) -> None:
    """Send spans to `provider` from now on (None: tracing off). Tests pass an SDK provider with
    an in-memory exporter; `setup` passes the OTLP one."""
    global _provider
    _provider = provider


def shutdown() -> None:
    """Flush the spans still buffered (at a process's exit)."""
    if _provider is not None and hasattr(_provider, "shutdown"):
        _provider.shutdown()


def enabled() -> bool:
    return _provider is not None


def tracer(name: str) -> Tracer:
    assert _provider is not None, "tracing is off"
    return _provider.get_tracer(name)


def traceparent() -> str:
    """The W3C traceparent of the current span; "" when tracing is off or there is none."""
    if _provider is None:
        return ""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def in_trace() -> bool:
    """Whether this thread or task is inside a span (tracing on)."""
    return _provider is not None and trace.get_current_span().get_span_context().is_valid


def context_of(traceparent_value: str) -> otel_context.Context | None:
    """The context a stored or received traceparent names (None when empty)."""
    if not traceparent_value:
        return None
    return _propagator.extract({TRACEPARENT: traceparent_value})


def context_from_metadata(metadata: Any) -> otel_context.Context | None:
    """The caller's trace context, from gRPC invocation metadata."""
    for key, value in metadata or ():
        if key == TRACEPARENT:
            return context_of(value if isinstance(value, str) else value.decode())
    return None


def end_span(span: Span, error: BaseException | None = None) -> None:
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


@contextmanager
def attached(span: Span) -> Iterator[None]:
    """`span` is current inside (in this thread or task)."""
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


# -- client side: the trace context goes out with every call -----------------------------------


def _with_traceparent(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    value = traceparent()
    if not value:
        return details
    metadata = grpc.aio.Metadata(*(tuple(details.metadata) if details.metadata else ()))
    metadata.add(TRACEPARENT, value)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


def _method_name(method: str | bytes) -> str:
    text = method.decode() if isinstance(method, bytes) else method
    return text.lstrip("/")


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if not in_trace():  # a poll outside any trace (a Claim): no trace of its own
            return await continuation(client_call_details, request)
        name = _method_name(client_call_details.method)
        with tracer(__name__).start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes={"rpc.system": "grpc"}
        ) as span:
            call = await continuation(_with_traceparent(client_call_details), request)
            try:
                await call
            except grpc.aio.AioRpcError as error:
                span.set_attribute("rpc.grpc.status_code", error.code().value[0])
                span.set_status(Status(StatusCode.ERROR, error.code().name))
            return call


class _Streaming(
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Streams (the heartbeat stream lives for hours) carry the context, without a span."""

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_with_traceparent(client_call_details), request)

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_with_traceparent(client_call_details), request_iterator)

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_with_traceparent(client_call_details), request_iterator)


def client_interceptors() -> list[Any]:
    """For a channel opened now: [] while tracing is off (no cost per call)."""
    return [_UnaryUnary(), _Streaming()] if enabled() else []


class _BlockingClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, details: Any, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _BlockingUnaryUnary(grpc.UnaryUnaryClientInterceptor):
    """A blocking channel's calls (the pipeline's advert sink, in a stage's thread)."""

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        if not in_trace():
            return continuation(client_call_details, request)
        name = _method_name(client_call_details.method)
        with tracer(__name__).start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes={"rpc.system": "grpc"}
        ):
            metadata = (*(client_call_details.metadata or ()), (TRACEPARENT, traceparent()))
            return continuation(_BlockingClientCallDetails(client_call_details, metadata), request)


def blocking_client_interceptors() -> list[grpc.UnaryUnaryClientInterceptor]:
    return [_BlockingUnaryUnary()] if enabled() else []
