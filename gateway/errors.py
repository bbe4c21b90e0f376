"""Every error the gateway returns, in one JSON shape, and the one gRPC -> HTTP mapping.

Shape, for every 4xx and 5xx (auth, routing, body guards, validation, queue-service errors):

    {"error": {"code": "INVALID_ARGUMENT", "message": "...", "field": "s3_key", "reason": null}}

`code` is a stable, machine-readable name (gRPC canonical names where one fits); `field` names
the offending request field when there is one; `reason` is the queue service's ErrorInfo reason
(e.g. JOB_NOT_FOUND, INVALID_TRANSITION) when the error came from it. Clients read `code` and
`reason`, never `message`.

Messages from the queue service are passed through only for the caller's own mistakes (4xx),
which the service words for callers. For server-side failures the body carries a fixed message:
the underlying detail (a connection error naming hosts, a database error) goes to the log only,
so no body ever contains a stack trace, SQL or a database URL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobqueue.ingest_input import SOURCE_TYPES
from jobqueue.rpc import error_info

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. INVALID_ARGUMENT.")
    message: str = Field(description="Human-readable explanation; do not parse it.")
    field: str | None = Field(
        default=None, description="The request field at fault (body, query or path), if any."
    )
    reason: str | None = Field(
        default=None, description="The queue service's ErrorInfo reason, e.g. JOB_NOT_FOUND."
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, field=field, reason=reason))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


@dataclass(frozen=True)
class HttpError:
    status: int
    code: str
    # Whether the queue service's own message is safe and useful to show the caller.
    pass_message: bool
    # The fixed message used when the service's message is not passed through.
    message: str = ""


# The one gRPC -> HTTP mapping. Anything not listed becomes 502 (the queue service failed in a
# way the caller cannot fix). UNAUTHENTICATED and PERMISSION_DENIED are 502, not 401 or 403: the
# caller's X-Admin-Key was already accepted, so a refusal at the queue service means the gateway's
# own credential is wrong or lacks the admin role (a worker's token, say) - a deployment fault
# that a 401 or 403 would misreport as the caller's.
GRPC_TO_HTTP: dict[grpc.StatusCode, HttpError] = {
    grpc.StatusCode.INVALID_ARGUMENT: HttpError(400, "INVALID_ARGUMENT", True),
    grpc.StatusCode.OUT_OF_RANGE: HttpError(400, "OUT_OF_RANGE", True),
    grpc.StatusCode.NOT_FOUND: HttpError(404, "NOT_FOUND", True),
    grpc.StatusCode.FAILED_PRECONDITION: HttpError(409, "FAILED_PRECONDITION", True),
    grpc.StatusCode.ALREADY_EXISTS: HttpError(409, "ALREADY_EXISTS", True),
    grpc.StatusCode.ABORTED: HttpError(409, "ABORTED", True),
    grpc.StatusCode.PERMISSION_DENIED: HttpError(
        502,
        "UPSTREAM_AUTH_FAILED",
        False,
        "the gateway's credential lacks the admin role at the queue service (QUEUE_ADMIN_TOKEN)",
    ),
    grpc.StatusCode.UNAUTHENTICATED: HttpError(
        502, "UPSTREAM_AUTH_FAILED", False, "the gateway is not authorised by the queue service"
    ),
    grpc.StatusCode.UNAVAILABLE: HttpError(
        503, "UNAVAILABLE", False, "the queue service is unavailable; retry later"
    ),
    grpc.StatusCode.DEADLINE_EXCEEDED: HttpError(
        504, "DEADLINE_EXCEEDED", False, "the queue service did not answer in time"
    ),
}
# Proto request fields whose REST names differ: the ListJobs query parameters, and the job
# input's keys (the REST enqueue body carries them at its top level).
REST_NAMES = {
    "page_token": "cursor",
    "page_size": "limit",
    "input.source_type": "source_type",
    "input.s3_key": "s3_key",
    "input.path": "path",
}
UPSTREAM_ERROR = HttpError(502, "UPSTREAM_ERROR", False, "the queue service failed")


def from_rpc_error(error: grpc.aio.AioRpcError) -> JSONResponse:
    """The HTTP answer for a failed gRPC call."""
    code = error.code()
    mapped = GRPC_TO_HTTP.get(code, UPSTREAM_ERROR)
    info = error_info(error)
    reason = (info.reason or None) if info else None
    if mapped.status >= 500:
        # The detail may name hosts or internal state: log it, never send it.
        # Outages are expected and transient (warning); anything else needs an operator.
        transient = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        log.log(
            logging.WARNING if transient else logging.ERROR,
            "queue service call failed: %s (%s): %s",
            code.name,
            reason,
            error.details(),
        )
    message = (error.details() or mapped.code) if mapped.pass_message else mapped.message
    field = (info.metadata.get("field") or None) if info and mapped.pass_message else None
    if field in REST_NAMES:
        # Speak the REST API's names, not the proto's, about the caller's own input.
        message = message.replace(field, REST_NAMES[field])
        field = REST_NAMES[field]
    return error_response(mapped.status, mapped.code, message, field=field, reason=reason)


# Codes for the HTTP errors Starlette raises itself (routing, body parsing).
HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """(message, field) for the first of FastAPI's validation errors, without echoing input."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    kind = first.get("type", "")
    loc = [str(part) for part in first.get("loc", ())]
    if kind == "json_invalid":
        return "the body is not valid JSON", None
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        discriminator = str(first.get("ctx", {}).get("discriminator", "")).strip("'\"")
        field = discriminator or None
        if kind == "union_tag_not_found":
            return f"{field} is required", field
        return f"{field} must be one of {first['ctx'].get('expected_tags', '')}", field
    # loc is (where, [union tag,] field, ...): "body"/"query"/"path", then the field path.
    parts = loc[1:]
    # The enqueue body is a union discriminated by source_type; pydantic puts the tag into the
    # location, but callers know the field by its own name only.
    if loc[:1] == ["body"] and len(parts) > 1 and parts[0] in SOURCE_TYPES:
        parts = parts[1:]
    field = ".".join(parts) or None
    message = str(first.get("msg", "invalid value"))
    if not parts and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "the body must be a JSON object", None
    if kind == "missing":
        message = "field required" if field else "a JSON body is required"
    elif kind == "extra_forbidden":
        message = "unknown query parameter" if loc[:1] == ["query"] else "unknown field"
    message = message.removeprefix("Value error, ")
    return (f"{field}: {message}" if field else message), field


def install(app: FastAPI) -> None:
    """Route FastAPI's and Starlette's own errors through the one error shape."""

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Every request the gateway cannot accept as sent is 400 INVALID_ARGUMENT, the same
        # status the queue service's INVALID_ARGUMENT maps to: one rule for callers, no 422.
        message, field = validation_message(exc.errors())
        return error_response(400, "INVALID_ARGUMENT", message, field=field)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        code = HTTP_CODES.get(status) or HTTPStatus(status).name
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        if status == 404 and detail == "Not Found":
            detail = "no such route"
        headers = dict(exc.headers or {})
        if status == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(status, code, detail, headers=headers)

    @app.exception_handler(grpc.aio.AioRpcError)
    async def on_rpc_error(request: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
        return from_rpc_error(exc)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug in the gateway: the trace goes to the log, the caller gets the shape only.
        log.exception("unexpected error handling %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL", "internal error; see the gateway log")


def _allowed_methods(request: Request) -> list[str]:
    """Every method the path answers to, from the OpenAPI document. (Starlette names only the
    first route matching the path, but GET and POST on /api/ingest/jobs/{id} are two routes.)"""
    segments = request.url.path.split("/")
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        parts = template.split("/")
        if len(parts) == len(segments) and all(
            part == segment or (part.startswith("{") and segment)
            for part, segment in zip(parts, segments, strict=True)
        ):
            methods |= {method.upper() for method in operations}
    return sorted(methods)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, all with the error shape."""
    descriptions = {
        400: "Invalid request: malformed JSON, a field out of its rules, a bad query or job id.",
        401: "Missing or wrong X-Admin-Key.",
        404: "No such job.",
        409: "The job's status forbids the action.",
        413: "Body larger than GATEWAY_MAX_BODY_BYTES.",
        415: "Body is not application/json.",
        502: "The queue service failed or refused the gateway's own credentials.",
        503: "The queue service (or its database) is unavailable.",
        504: "The queue service did not answer within GATEWAY_GRPC_TIMEOUT_SECONDS.",
    }
    return {
        status: {"model": ErrorResponse, "description": descriptions[status]} for status in statuses
    }
