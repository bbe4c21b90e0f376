"""What every request passes before any route sees it: the admin key, then the body rules.

This is ASGI middleware rather than a FastAPI dependency because FastAPI parses the body before
it runs dependencies: checked there, an unauthenticated caller would get 400s that reveal the
body's rules, and an oversized body would be read whole before being refused. Here, the order is
401 (key) -> 413 (declared size) -> 415 (content type) -> 413 (actual size), and the body is read
at most up to its limit.

Guessing the key is slowed down: a client (by address) whose key was refused
GATEWAY_AUTH_FAILURE_LIMIT times within GATEWAY_AUTH_FAILURE_WINDOW_SECONDS gets 429 with
Retry-After on every /api request until its window ends, without its key being compared at all.
The table of clients is bounded (MAX_TRACKED_CLIENTS, oldest dropped first), so a flood of
addresses costs fixed memory. Behind a reverse proxy every client shares the proxy's address.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response

PROTECTED_PREFIX = "/api"
HEADER = "X-Admin-Key"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
UNAUTHENTICATED_MESSAGE = f"missing or invalid {HEADER}"


MAX_TRACKED_CLIENTS = 10_000


class AuthFailures:
    """Refused keys per client in fixed windows; bounded memory. The clock is injectable."""

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_TRACKED_CLIENTS,
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._max_clients = max_clients
        # client -> (window start, refusals in it), least recently refused first.
        self._clients: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None when it may now."""
        entry = self._clients.get(client)
        if entry is None:
            return None
        start, refusals = entry
        remaining = start + self._window - self._clock()
        if remaining <= 0:
            del self._clients[client]
            return None
        return math.ceil(remaining) if refusals >= self._limit else None

    def refused(self, client: str) -> None:
        now = self._clock()
        start, refusals = self._clients.pop(client, (now, 0))
        if start + self._window <= now:
            start, refusals = now, 0
        self._clients[client] = (start, refusals + 1)
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)

    def accepted(self, client: str) -> None:
        self._clients.pop(client, None)

    def __len__(self) -> int:
        return len(self._clients)


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
    def __init__(
        self,
        app: ASGIApp,
        *,
        admin_key: str,
        max_body_bytes: int,
        failures: AuthFailures | None = None,
    ) -> None:
        self.app = app
        self._expected = admin_key.encode("utf-8")
        self._max_body_bytes = max_body_bytes
        self._failures = (
            failures if failures is not None else AuthFailures(limit=10, window_seconds=60.0)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path: str = scope["path"]
        protected = path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
        if protected:
            client = scope["client"][0] if scope.get("client") else "unknown"
            wait = self._failures.retry_after(client)
            if wait is not None:
                await _refuse(
                    send,
                    429,
                    "TOO_MANY_REQUESTS",
                    f"too many refused {HEADER} values from this client; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
                return
            if not key_matches(headers.get(HEADER.lower().encode()), self._expected):
                self._failures.refused(client)
                await _refuse(send, 401, "UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE)
                return
            self._failures.accepted(client)
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


async def _refuse(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    response = error_response(status, code, message, headers=headers)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})
