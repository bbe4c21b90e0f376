"""What every request passes before any route sees it: the admin key, then the body rules.

This is ASGI middleware rather than a FastAPI dependency because FastAPI parses the body before
it runs dependencies: checked there, an unauthenticated caller would get 400s that reveal the
body's rules, and an oversized body would be read whole before being refused. Here, the order is
401 (key) -> 413 (declared size) -> 415 (content type) -> 413 (actual size), and the body is read
at most up to its limit.
"""

from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response

PROTECTED_PREFIX = "/api"
HEADER = "X-Admin-Key"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UNAUTHENTICATED_MESSAGE = f"missing or invalid {HEADER}"


def key_matches(presented: bytes | None, expected: bytes) -> bool:
    """Constant-time comparison, so response timing does not reveal how much of a key matched.

    A missing key is compared as empty (the configured key never is): missing and wrong take the
    same path and get the same answer.
    """
    return hmac.compare_digest(presented or b"", expected)


# Declares the scheme in the OpenAPI document (so tools know to send the header) and re-checks
# the key for any route that might one day be mounted outside the guarded prefix.
admin_key_header = APIKeyHeader(
    name=HEADER,
    scheme_name="AdminKey",
    description="The gateway's ADMIN_API_KEY. Required on every /api route.",
    auto_error=False,
)


def require_admin_key(request: Request, key: str | None = Security(admin_key_header)) -> None:
    expected: bytes = request.app.state.admin_key
    if not key_matches(None if key is None else key.encode("latin-1"), expected):
        raise HTTPException(401, UNAUTHENTICATED_MESSAGE)


class RequestGuard:
    def __init__(self, app: ASGIApp, *, admin_key: str, max_body_bytes: int) -> None:
        self.app = app
        self._expected = admin_key.encode("utf-8")
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path: str = scope["path"]
        protected = path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
        if protected and not key_matches(headers.get(HEADER.lower().encode()), self._expected):
            await _refuse(send, 401, "UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE)
            return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body_bytes:
            await self._too_large(send)
            return
        has_body = (declared is not None and declared.strip(b"0") != b"") or (
            b"transfer-encoding" in headers
        )
        if has_body and not _is_json(headers.get(b"content-type")):
            await _refuse(
                send, 415, "UNSUPPORTED_MEDIA_TYPE", "the body must be sent as application/json"
            )
            return

        # Read the body ourselves, up to the limit: a client may lie in Content-Length or send
        # chunks without one. Then hand the buffered body to the app.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _refuse(
            send, 413, "PAYLOAD_TOO_LARGE", f"the body is larger than {self._max_body_bytes} bytes"
        )


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """Header name -> first value. Names are already lower case in ASGI."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name, value)
    return headers


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json"


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    response = error_response(status, code, message)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})
