"""A gRPC proxy between the workers and the queue service that writes down what the clients
were told, and can lose an answer on purpose.

Every call is forwarded as bytes (any method, any message, new fields included), with its
metadata, deadline and status (ErrorInfo details too), so the workers see the queue service as
it is. What concerns a lease is decoded on the way: each job a Claim hands out (`Claim`), each
Complete, Fail and Release entry and each heartbeat beat with its answer (`Write`). A dropped
answer (`drop_answers`) is a call the queue service carried out whose answer the worker never
gets: it sees UNAVAILABLE, as when a connection breaks after the request went through, and the
history records the write as `lost` (accepted).

The upstream channel is the workers' own (`jobqueue.rpc.open_channel`), so reconnecting after a
queue service restart follows the same backoff as theirs; a client that goes away (a killed
worker) cancels its upstream call, so the queue service sees a heartbeat stream end when it
would without the proxy.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory

from jobqueue import rpc
from jobqueue.v1 import advert_service_pb2 as advert_pb
from jobqueue.v1 import queue_service_pb2 as pb
from tests.faults.history import Claim, Write, WriteKind, WriteOutcome

QUEUE_SERVICE = "/jobqueue.v1.QueueService/"
REJECTED_CODES = frozenset(
    {grpc.StatusCode.ABORTED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
)
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", rpc.MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", rpc.MAX_MESSAGE_BYTES),
]
# Metadata that gRPC sets itself and refuses from an application.
RESERVED = (":", "grpc-", "user-agent", "content-type", "te")
ADVERT_SERVICE = "/jobqueue.v1.AdvertService/"
# Calls that write under a lease, one job each: (kind, request message), by full method name.
SINGLE_WRITES: dict[str, tuple[WriteKind, type[Any]]] = {
    QUEUE_SERVICE + "Complete": ("complete", pb.CompleteRequest),
    QUEUE_SERVICE + "Fail": ("fail", pb.FailRequest),
    QUEUE_SERVICE + "Release": ("release", pb.ReleaseRequest),
    ADVERT_SERVICE + "StoreAdvert": ("advert", advert_pb.StoreAdvertRequest),
}
BATCH_WRITES: dict[str, tuple[WriteKind, type[Any], type[Any]]] = {
    QUEUE_SERVICE + "CompleteBatch": (
        "complete",
        pb.CompleteBatchRequest,
        pb.CompleteBatchResponse,
    ),
    QUEUE_SERVICE + "FailBatch": ("fail", pb.FailBatchRequest, pb.FailBatchResponse),
}


def _streaming(method: str) -> tuple[bool, bool]:
    """Whether `/package.Service/Method` streams requests, responses (unary when unknown)."""
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    except KeyError:
        return False, False
    if found is None:
        return False, False
    return bool(found.client_streaming), bool(found.server_streaming)


def message_class(method: str, response: bool) -> type[Any] | None:
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    except KeyError:
        return None
    return message_factory.GetMessageClass(found.output_type if response else found.input_type)


class RecordingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = 0
        self.claims: list[Claim] = []
        self.writes: list[Write] = []
        self.dropped: list[str] = []
        self._drop: dict[str, int] = defaultdict(int)
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._channel = rpc.open_channel(self.upstream)
        self._server = grpc.aio.server(options=SERVER_OPTIONS)
        self._server.add_generic_rpc_handlers([_Handler(self)])
        self.port = self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
        if self._channel is not None:
            await self._channel.close(None)

    def drop_answers(self, method: str, count: int = 1) -> None:
        """Carry out the next `count` calls of `method` (its name: "CompleteBatch", "Claim") but
        answer them UNAVAILABLE, as if the connection broke on the way back."""
        self._drop[method] += count

    def _take_drop(self, method: str) -> bool:
        name = method.rpartition("/")[2]
        if self._drop[name] > 0:
            self._drop[name] -= 1
            self.dropped.append(name)
            return True
        return False

    # -- recording ------------------------------------------------------------------------

    def _record_unary(
        self,
        method: str,
        request: bytes,
        response: bytes | None,
        code: grpc.StatusCode,
        sent_at: float,
        dropped: bool,
    ) -> None:
        now = time.time()
        if method == QUEUE_SERVICE + "Claim":
            # A dropped answer hands the jobs to nobody: the worker never heard of them.
            if response is not None and not dropped:
                worker = pb.ClaimRequest.FromString(request).worker_id
                for job in pb.ClaimResponse.FromString(response).jobs:
                    self.claims.append(Claim(job.id, job.lease, worker, now))
            return
        if method in SINGLE_WRITES:
            kind, request_class = SINGLE_WRITES[method]
            entry = request_class.FromString(request)
            outcome: WriteOutcome = "lost" if dropped else _outcome(code)
            self.writes.append(Write(entry.job_id, entry.lease, kind, sent_at, outcome, now))
        elif method in BATCH_WRITES:
            kind, request_class, response_class = BATCH_WRITES[method]
            entries = request_class.FromString(request).entries
            results = {}
            if response is not None:
                results = {r.job_id: r for r in response_class.FromString(response).results}
            for entry in entries:
                result = results.get(entry.job_id)
                if result is None:
                    outcome = _outcome(code)
                elif result.outcome == pb.OUTCOME_OK:
                    outcome = "lost" if dropped else "ok"
                else:
                    outcome = "rejected"
                self.writes.append(Write(entry.job_id, entry.lease, kind, sent_at, outcome, now))

    def _beats_sent(
        self, request: bytes, pending: deque[tuple[float, list[tuple[str, int]]]]
    ) -> None:
        message = pb.HeartbeatRequest.FromString(request)
        beats = [(b.job_id, b.lease) for b in message.beats] or [(message.job_id, message.lease)]
        pending.append((time.time(), beats))

    def _beats_answered(
        self, response: bytes, pending: deque[tuple[float, list[tuple[str, int]]]]
    ) -> None:
        message = pb.HeartbeatResponse.FromString(response)
        sent_at = pending.popleft()[0] if pending else time.time()
        answers = [(a.job_id, a.lease, a.action) for a in message.beats] or [
            (message.job_id, message.lease, message.action)
        ]
        now = time.time()
        for job_id, lease, action in answers:
            outcome: WriteOutcome = "rejected" if action == pb.HEARTBEAT_ACTION_LEASE_LOST else "ok"
            self.writes.append(Write(job_id, lease, "heartbeat", sent_at, outcome, now))


def _outcome(code: grpc.StatusCode) -> WriteOutcome:
    if code == grpc.StatusCode.OK:
        return "ok"
    return "rejected" if code in REJECTED_CODES else "error"


def _metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if not key.startswith(RESERVED)
    )


async def _abort_as(context: grpc.aio.ServicerContext, error: grpc.aio.AioRpcError) -> None:
    """End the client's call as the upstream call ended: code, details, trailing metadata (the
    ErrorInfo details among it)."""
    received: Any = error.trailing_metadata() or ()
    trailing = tuple(
        (key, value)
        for key, value in received
        if not key.startswith(RESERVED) or key == "grpc-status-details-bin"
    )
    await context.abort(error.code(), error.details() or "", trailing)


def _timeout(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e6 else max(remaining, 0.001)


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, proxy: RecordingProxy) -> None:
        self._proxy = proxy

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        client_streaming, server_streaming = _streaming(method)
        if client_streaming and server_streaming:
            return grpc.stream_stream_rpc_method_handler(self._stream_stream(method))
        if server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._unary_stream(method))
        if client_streaming:
            return grpc.stream_unary_rpc_method_handler(self._stream_unary(method))
        return grpc.unary_unary_rpc_method_handler(self._unary_unary(method))

    def _channel(self) -> grpc.aio.Channel:
        channel = self._proxy._channel
        assert channel is not None
        return channel

    def _unary_unary(self, method: str) -> Callable[..., Any]:
        proxy = self._proxy

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            sent_at = time.time()
            call = self._channel().unary_unary(method, None, None)(
                request, metadata=_metadata(context), timeout=_timeout(context)
            )
            try:
                response: bytes = await call
            except grpc.aio.AioRpcError as error:
                proxy._record_unary(method, request, None, error.code(), sent_at, False)
                await _abort_as(context, error)
                raise  # abort raises; this line is never reached
            except asyncio.CancelledError:
                # The client went away (a killed worker) with its call in flight: the queue
                # service may have carried it out, nobody heard the answer.
                proxy._record_unary(
                    method, request, None, grpc.StatusCode.CANCELLED, sent_at, False
                )
                raise
            dropped = proxy._take_drop(method)
            proxy._record_unary(method, request, response, grpc.StatusCode.OK, sent_at, dropped)
            if dropped:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "fault injected: answer lost")
            return response

        return forward

    def _unary_stream(self, method: str) -> Callable[..., Any]:
        async def forward(
            request: bytes, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            call = self._channel().unary_stream(method, None, None)(
                request, metadata=_metadata(context), timeout=_timeout(context)
            )
            try:
                async for response in call:
                    yield response
            except grpc.aio.AioRpcError as error:
                await _abort_as(context, error)
            finally:
                call.cancel()

        return forward

    def _stream_unary(self, method: str) -> Callable[..., Any]:
        async def forward(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> bytes:
            call = self._channel().stream_unary(method, None, None)(
                requests, metadata=_metadata(context), timeout=_timeout(context)
            )
            try:
                response: bytes = await call
                return response
            except grpc.aio.AioRpcError as error:
                await _abort_as(context, error)
                raise
            finally:
                call.cancel()

        return forward

    def _stream_stream(self, method: str) -> Callable[..., Any]:
        proxy = self._proxy
        heartbeat = method == QUEUE_SERVICE + "Heartbeat"

        async def forward(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            pending: deque[tuple[float, list[tuple[str, int]]]] = deque()

            async def upstream_requests() -> AsyncIterator[bytes]:
                async for request in requests:
                    if heartbeat:
                        proxy._beats_sent(request, pending)
                    yield request

            call = self._channel().stream_stream(method, None, None)(
                upstream_requests(), metadata=_metadata(context), timeout=_timeout(context)
            )
            try:
                async for response in call:
                    if heartbeat:
                        proxy._beats_answered(response, pending)
                    yield response
            except grpc.aio.AioRpcError as error:
                await _abort_as(context, error)
            finally:
                call.cancel()

        return forward
