"""The gateway's own metrics at `/metrics`, and a server span for every request.

`/metrics` needs no admin key, like `/healthz`: Prometheus scrapers rarely send custom headers,
and it shows no job data and no secret, only request counts and latencies by route template
(`/api/ingest/jobs/{job_id}`, never a job id). Where it must not be reachable, keep it behind
the network, as one does for any exporter.

With tracing on, each request runs inside a server span that continues the caller's
`traceparent` header, and the AdminService calls it makes carry it on (jobqueue/tracing.py).
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.responses import Response
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobqueue import tracing
from jobqueue.metrics import REGISTRY, SECONDS_BUCKETS

REQUESTS = Counter(
    "jobqueue_gateway_requests_total",
    "HTTP requests answered, by method, route template and status code (requests refused "
    "before routing, e.g. a missing key, have route 'unrouted').",
    ["method", "route", "status"],
)
REQUEST_DURATION = Histogram(
    "jobqueue_gateway_request_duration_seconds",
    "HTTP request latency by method and route template, from the first byte in to the last out.",
    ["method", "route"],
    buckets=SECONDS_BUCKETS,
)
UNROUTED = "unrouted"


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", None) or UNROUTED)


class Observe:
    """ASGI middleware, outermost: times and counts every request; with tracing on, a span."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        span = None
        if tracing.enabled():
            headers = {
                key.decode("latin-1"): value.decode("latin-1")
                for key, value in scope.get("headers", ())
                if key == b"traceparent"
            }
            span = tracing.tracer("gateway").start_span(
                f"{scope['method']} {scope['path']}",
                context=tracing.context_of(headers.get("traceparent", "")),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": scope["method"]},
            )

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            if span is None:
                await self.app(scope, receive, send_observed)
            else:
                with tracing.attached(span):
                    await self.app(scope, receive, send_observed)
        finally:
            route, method = route_of(scope), scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            REQUEST_DURATION.labels(method, route).observe(time.perf_counter() - began)
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, str(status)))
                span.end()


def install(app: FastAPI) -> None:
    """`/metrics` (Prometheus text format; outside /api, so no key) and the middleware."""

    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(Observe)
