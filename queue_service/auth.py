"""Who may call what: per-role credentials for every RPC but health checks and reflection.

Two roles (docs/architecture.md, "Security"):

- **worker**: QueueService (claim, heartbeat, settle), AdvertService.StoreAdvert (under the job's
  lease), and the two reads a worker makes of AdminService: GetJob (reading back a settled job)
  and GetQueueStats (its start-up check).
- **admin** (operators, producers, the gateway): AdminService and AdvertService.GetAdvert.

A caller proves a role with `authorization: Bearer <token>` metadata, compared in constant time
against QUEUE_WORKER_TOKEN (worker), QUEUE_ADMIN_TOKEN (admin) and QUEUE_AUTH_TOKEN (both roles,
as before roles existed), or, over mutual TLS, with a client certificate whose common name or a
DNS/URI subject alternative name is listed in QUEUE_TLS_WORKER_NAMES / QUEUE_TLS_ADMIN_NAMES.
No or a wrong credential is UNAUTHENTICATED; a valid one without the method's role is
PERMISSION_DENIED. With no credential configured at all, auth is off (loopback development).
Health and reflection stay open so that load balancers, docker healthchecks and `grpcurl list`
work without a secret. Tokens are never logged.

The caller of the current RPC (role, credential, and the operator a trusted gateway names in
`x-jobqueue-operator` metadata) is kept in `current_caller` for the audit trail.
"""

from __future__ import annotations

import enum
import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from jobqueue.rpc import OPERATOR_METADATA

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MAX_OPERATOR_CHARS = 200


class Role(enum.StrEnum):
    WORKER = "worker"
    ADMIN = "admin"


WORKER_ONLY = frozenset({Role.WORKER})
ADMIN_ONLY = frozenset({Role.ADMIN})
BOTH = frozenset({Role.WORKER, Role.ADMIN})

# Method (full name) or service prefix -> the roles that may call it. Anything of ours not
# listed needs the admin role: a new RPC is closed to workers until someone opens it here.
_METHOD_ROLES: dict[str, frozenset[Role]] = {
    "/jobqueue.v1.AdvertService/StoreAdvert": WORKER_ONLY,
    "/jobqueue.v1.AdvertService/GetAdvert": ADMIN_ONLY,
    "/jobqueue.v1.AdminService/GetJob": BOTH,
    "/jobqueue.v1.AdminService/GetQueueStats": BOTH,
}
_SERVICE_ROLES: dict[str, frozenset[Role]] = {
    "/jobqueue.v1.QueueService/": WORKER_ONLY,
    "/jobqueue.v1.AdminService/": ADMIN_ONLY,
}


def allowed_roles(method: str) -> frozenset[Role]:
    if method in _METHOD_ROLES:
        return _METHOD_ROLES[method]
    for prefix, roles in _SERVICE_ROLES.items():
        if method.startswith(prefix):
            return roles
    return ADMIN_ONLY


@dataclass(frozen=True)
class Caller:
    roles: frozenset[Role]
    # How the caller proved it: "QUEUE_ADMIN_TOKEN", "cert:ops.example", "anonymous" (auth off).
    credential: str
    # Who a trusted client says is behind the call ("gateway 10.0.0.7"); "" when not given.
    operator: str = ""

    @property
    def role(self) -> str:
        return "+".join(sorted(self.roles)) or "none"


ANONYMOUS = Caller(roles=BOTH, credential="anonymous")
current_caller: ContextVar[Caller] = ContextVar("current_caller", default=ANONYMOUS)


@dataclass(frozen=True)
class Credential:
    name: str  # the variable it came from; what the audit trail records, never the value
    expected: bytes
    roles: frozenset[Role]


class Authorizer:
    """Decides the caller of one RPC from its metadata and its TLS peer."""

    def __init__(
        self,
        *,
        worker_token: str | None = None,
        admin_token: str | None = None,
        shared_token: str | None = None,
        worker_names: Iterable[str] = (),
        admin_names: Iterable[str] = (),
    ) -> None:
        tokens = (
            ("QUEUE_WORKER_TOKEN", worker_token, WORKER_ONLY),
            ("QUEUE_ADMIN_TOKEN", admin_token, ADMIN_ONLY),
            ("QUEUE_AUTH_TOKEN", shared_token, BOTH),
        )
        self._credentials = [
            Credential(name, f"Bearer {token}".encode(), roles)
            for name, token, roles in tokens
            if token
        ]
        self._names: dict[str, set[Role]] = {}
        for names, role in ((worker_names, Role.WORKER), (admin_names, Role.ADMIN)):
            for name in names:
                self._names.setdefault(name, set()).add(role)

    @property
    def refusal(self) -> str:
        """The UNAUTHENTICATED message: what would have been accepted."""
        if self._names and self._credentials:
            return "missing or invalid bearer token or client certificate"
        if self._names:
            return "missing or unknown client certificate"
        return "missing or invalid bearer token"

    @property
    def enabled(self) -> bool:
        return bool(self._credentials or self._names)

    def from_token(self, presented: bytes) -> Caller | None:
        match: Credential | None = None
        # Every credential is compared, so the time taken does not say which one nearly matched.
        for credential in self._credentials:
            if hmac.compare_digest(presented, credential.expected) and match is None:
                match = credential
        return None if match is None else Caller(match.roles, match.name)

    def from_certificate(self, auth_context: Mapping[str, Iterable[bytes]]) -> Caller | None:
        """The roles of a verified client certificate's names (gRPC only fills x509_* after
        the handshake verified the chain against QUEUE_TLS_CLIENT_CA_FILE)."""
        if not self._names:
            return None
        names = [
            value.decode("utf-8", "replace")
            for key in ("x509_common_name", "x509_subject_alternative_name")
            for value in auth_context.get(key, ())
        ]
        for name in names:
            if name in self._names:
                return Caller(frozenset(self._names[name]), f"cert:{name}")
        return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        presented = metadata.get("authorization", b"")
        if isinstance(presented, str):
            presented = presented.encode()
        operator = _operator(metadata.get(OPERATOR_METADATA, ""))
        allowed = allowed_roles(method)
        authorizer = self._authorizer

        async def admit(context: grpc.aio.ServicerContext) -> Caller:
            caller = authorizer.from_token(presented) if presented else None
            if caller is None:
                caller = authorizer.from_certificate(context.auth_context())
            if caller is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, authorizer.refusal)
            assert caller is not None  # abort raised otherwise
            if not caller.roles & allowed:
                log.warning(
                    "refused %s to %s (role %s) from %s",
                    method,
                    caller.credential,
                    caller.role,
                    context.peer(),
                )
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the {caller.role} role may not call {method}",
                )
            return Caller(caller.roles, caller.credential, operator)

        return _guarded(handler, admit)


def _operator(value: str | bytes) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    printable = "".join(ch for ch in text if ch.isprintable())
    return printable[:MAX_OPERATOR_CHARS]


def _guarded(
    handler: grpc.RpcMethodHandler,
    admit: Callable[[grpc.aio.ServicerContext], Awaitable[Caller]],
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that admits the caller first and keeps it in
    `current_caller` while the method runs."""
    behavior: Callable[..., Any]

    async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = current_caller.set(await admit(context))
        try:
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        finally:
            current_caller.reset(token)

    async def stream_response(
        request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        token = current_caller.set(await admit(context))
        try:
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            elif inspect.isawaitable(result):
                await result
        finally:
            current_caller.reset(token)

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        behavior = handler.stream_stream  # type: ignore[assignment]
        return grpc.stream_stream_rpc_method_handler(stream_response, **codec)
    if handler.request_streaming:
        behavior = handler.stream_unary  # type: ignore[assignment]
        return grpc.stream_unary_rpc_method_handler(unary_response, **codec)
    if handler.response_streaming:
        behavior = handler.unary_stream  # type: ignore[assignment]
        return grpc.unary_stream_rpc_method_handler(stream_response, **codec)
    behavior = handler.unary_unary  # type: ignore[assignment]
    return grpc.unary_unary_rpc_method_handler(unary_response, **codec)


def auth_interceptors(authorizer: Authorizer) -> list[grpc.aio.ServerInterceptor]:
    """The auth interceptor, or none when no credential is configured (auth off)."""
    if not authorizer.enabled:
        log.warning("no QUEUE_*_TOKEN and no client CA configured: every RPC is open")
        return []
    return [AuthInterceptor(authorizer)]
