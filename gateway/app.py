"""Builds the gateway's FastAPI application: routes, the request guard, the error shape, /healthz,
the dashboard's pages and the docs page (gateway.ui.pages), and the security headers.

The app holds no state but a gRPC channel to the queue service; any number of gateways can run
side by side behind a load balancer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway import errors, metrics
from gateway.client import QueueClient
from gateway.config import Config
from gateway.guard import AuthFailures, RequestGuard
from gateway.headers import SecurityHeaders
from gateway.routes import router
from gateway.schemas import HealthzResponse
from gateway.ui import pages
from jobqueue.rpc import open_channel

DESCRIPTION = """\
Admin REST API of the ingestion job queue: a stateless translation of the queue service's
`jobqueue.v1.AdminService` (gRPC).

**Authentication.** Every `/api` route requires the `X-Admin-Key` header (the gateway's
`ADMIN_API_KEY`); a missing or wrong key gets 401. A client whose key was refused
GATEWAY_AUTH_FAILURE_LIMIT times within GATEWAY_AUTH_FAILURE_WINDOW_SECONDS (10 in 60 s) gets
**429** with `Retry-After` on every `/api` route until its window ends. `/healthz` and this
document are open.

**Dashboard.** The operators' dashboard is at `/ui/` (a job's page at `/ui/jobs/{job_id}`). Its
pages hold no data: they ask this API for it with the key the operator types in, kept for the
browser tab's session only and sent as `X-Admin-Key`.

**Errors.** Every error has one shape:
`{"error": {"code", "message", "field", "reason"}}`. Any request the gateway cannot accept as
sent (malformed JSON, a field outside its rules, an unknown field or query parameter, a job id
that is not a UUID, an unknown action, `limit` out of 1..500, an unknown `status`) is
**400 INVALID_ARGUMENT** (never 422), and changes nothing. Bodies over the size limit get 413,
bodies that are not `application/json` 415. Queue-service errors map as: INVALID_ARGUMENT 400,
NOT_FOUND 404, FAILED_PRECONDITION / ALREADY_EXISTS / ABORTED 409, UNAUTHENTICATED and
PERMISSION_DENIED **502** (the caller's key was accepted; the queue service refused the gateway's
own credential, or it lacks the admin role: a deployment fault), UNAVAILABLE 503,
DEADLINE_EXCEEDED 504, anything else 502.

**Enqueue** answers 201 for a new job and 200 (`already_existed: true`) for a known one.
**One job** is returned as `{"job": {...}}`, with the `ingestion_jobs` column names.

**Metrics.** `/metrics` serves the gateway's own Prometheus metrics (request counts and
latencies by route template) without a key, like `/healthz`; it shows no job data.

**Health** (`GET /api/ingest/stats`): `unhealthy` when a RUNNING job's heartbeat is overdue or
the oldest runnable job has waited longer than GATEWAY_HEALTH_MAX_WAIT_SECONDS; otherwise
`degraded` when FAILED (dead-letter) jobs exist; otherwise `healthy`.
"""


def create_app(config: Config, channel: grpc.aio.Channel | None = None) -> FastAPI:
    """The app; it opens its own channel to QUEUE_ADDR unless one is given (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The channel must be made inside the server's event loop, hence here and not above.
        own = open_channel(config.queue_addr, config.tls) if channel is None else None
        app.state.queue_client = QueueClient(
            own or channel,  # type: ignore[arg-type]
            token=config.queue_auth_token,
            timeout=config.grpc_timeout_seconds,
        )
        try:
            yield
        finally:
            if own is not None:
                await own.close(grace=None)

    app = FastAPI(
        title="Ingestion job queue: admin API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own pages load their scripts from a CDN; ours are served from here.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.config = config
    app.state.admin_key = config.admin_api_key.encode("utf-8")
    errors.install(app)
    app.add_middleware(
        RequestGuard,
        admin_key=config.admin_api_key,
        max_body_bytes=config.max_body_bytes,
        failures=AuthFailures(config.auth_failure_limit, config.auth_failure_window_seconds),
    )
    # Added after the guard, so outside it: the guard's own 401/413/415 answers get the headers.
    app.add_middleware(SecurityHeaders)
    app.include_router(router)
    pages.install(app)
    # Outermost: every request is counted and timed, refused ones included.
    metrics.install(app)

    @app.get(
        "/healthz",
        response_model=HealthzResponse,
        responses={503: {"model": HealthzResponse, "description": "Queue service not serving."}},
        summary="Whether the queue service behind this gateway is serving (no key needed)",
    )
    async def healthz(request: Request) -> JSONResponse:
        status = await request.app.state.queue_client.serving_status()
        ok = status == "SERVING"
        body = HealthzResponse(status="ok" if ok else "unavailable", queue_service=status)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    return app
