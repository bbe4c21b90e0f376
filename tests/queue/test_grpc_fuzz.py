"""Property-based fuzzing of every RPC, as tests/gateway/test_fuzz.py does for REST: hypothesis
generates messages from the contract's own descriptors (any field, any value its type allows:
NUL and non-UUID strings, huge and negative numbers, NaN, unknown enum values, nested Structs,
out-of-range timestamps), sent with each kind of credential to a real queue service on a
loopback port. Whatever comes, the service answers with a status it documents, never INTERNAL or
UNKNOWN; a refused call changes no job and no advert; the server's log never holds a token.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue.rpc import bearer_metadata
from jobqueue.v1 import admin_service_pb2, advert_service_pb2, queue_service_pb2
from tests.support.databases import create_database, drop_database, url_for
from tests.support.grpc_server import running_queue, service_config
from tests.support.jobs import insert_job

pytestmark = [
    pytest.mark.integration,
    # The service runs on its own thread beside hypothesis and draws jitter from `random` (its
    # backoffs); hypothesis takes a change of the global random state while it generates for
    # a strategy's own use of `random`, which none of these strategies makes.
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning"
    ),
]

WORKER_TOKEN = "fuzz-worker-token-0123456789"
ADMIN_TOKEN = "fuzz-admin-token-0123456789"
CREDENTIALS = {
    "worker": bearer_metadata(WORKER_TOKEN),
    "admin": bearer_metadata(ADMIN_TOKEN),
    "none": (),
    "wrong": bearer_metadata("fuzz-wrong-token-0123456789"),
}
# Per RPC: ~16 RPCs, so the whole run stays well under a minute on two cores.
EXAMPLES_PER_RPC = 30

METHODS = [
    method
    for module, name in (
        (queue_service_pb2, "QueueService"),
        (admin_service_pb2, "AdminService"),
        (advert_service_pb2, "AdvertService"),
    )
    for method in module.DESCRIPTOR.services_by_name[name].methods
]

# Strings that reach past validation: real job ids of the seeded rows, well-formed unknown ones.
KNOWN_JOB_IDS: list[str] = []

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def json_values() -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    )


def strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.uuids().map(str),
        st.sampled_from(KNOWN_JOB_IDS) if KNOWN_JOB_IDS else st.just(""),
        st.sampled_from(["", "default", "s3:videos/fuzz.mp4", "\x00", "a" * 5000]),
    )


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        return st.one_of(st.integers(-3, 3), st.integers(low, high))
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        width = 32 if kind == FieldDescriptor.TYPE_FLOAT else 64
        return st.floats(width=width)  # NaN and infinities included
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return strings()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=20)
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.sampled_from(known) | st.integers(-5, 100)  # unknown values too
    raise AssertionError(f"unhandled field type {kind}")


def messages(message: descriptor.Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """Any message of this type, its fields each set or not."""
    cls = message_factory.GetMessageClass(message)
    if message.full_name == "google.protobuf.Struct":

        def struct(values: dict[str, Any]) -> Any:
            built = cls()
            built.update(values)
            return built

        return st.dictionaries(st.text(max_size=10), json_values(), max_size=4).map(struct)
    if message.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return st.builds(
            cls, seconds=st.integers(-(2**40), 2**40), nanos=st.integers(-(10**9), 10**9)
        )
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3 or field.message_type.GetOptions().map_entry:
                continue
            value = messages(field.message_type, depth + 1)
        else:
            value = scalar(field)
        if field.is_repeated:
            fields[field.name] = st.lists(value, max_size=3)
        else:
            fields[field.name] = value
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(cls, values))


def _build(cls: Any, values: dict[str, Any]) -> Any:
    built = cls()
    for name, value in values.items():
        field = getattr(built, name)
        if isinstance(value, list):
            field.extend(value)
        elif hasattr(value, "DESCRIPTOR"):
            field.CopyFrom(value)
        else:
            setattr(built, name, value)
    return built


class LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


class Server:
    """The queue service on its own event loop in a thread, so that hypothesis's synchronous
    test body can call it through a blocking channel."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self._done: Future[None] | None = None
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        ready: Future[int] = Future()

        async def serve() -> None:
            config = service_config(
                self.database_url, worker_token=WORKER_TOKEN, admin_token=ADMIN_TOKEN
            )
            self._stop = asyncio.Event()
            async with running_queue(config) as running:
                ready.set_result(running.service.port)
                await self._stop.wait()

        self._done = asyncio.run_coroutine_threadsafe(serve(), self._loop)  # type: ignore[assignment]
        self.port = ready.result(timeout=30)

    def stop(self) -> None:
        assert self._stop is not None and self._done is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._done.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture(scope="module")
def fuzz_env(template_database: str) -> Iterator[tuple[Server, grpc.Channel, LogRecorder]]:
    name = create_database(template=template_database, prefix="jq_fuzz")
    url = url_for(name)
    with psycopg.connect(url, autocommit=True) as conn:
        for status in ("QUEUED", "RUNNING", "FAILED", "SUCCEEDED", "CANCELLED", "RETRY"):
            KNOWN_JOB_IDS.append(str(insert_job(conn, status=status)["id"]))
    recorder = LogRecorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    # Everything the service itself logs, debug lines included (grpc's own are only noise).
    ours = [logging.getLogger(name) for name in ("queue_service", "jobqueue")]
    previous = [logger.level for logger in ours]
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    server = Server(url)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield server, channel, recorder
    finally:
        channel.close()
        server.stop()
        root.removeHandler(recorder)
        for logger, level in zip(ours, previous, strict=True):
            logger.setLevel(level)
        KNOWN_JOB_IDS.clear()
        drop_database(name)


def snapshot(url: str) -> tuple[Any, ...]:
    """Every job and advert as they are: what a refused call must leave alone."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT md5(coalesce(string_agg(j::text, ',' ORDER BY id), ''))"
            "        FROM ingestion_jobs j),"
            "       (SELECT md5(coalesce(string_agg(a::text, ',' ORDER BY id), ''))"
            "        FROM adverts a),"
            "       (SELECT count(*) FROM advert_chunks)"
        ).fetchone()
    assert row is not None
    return tuple(row)


def call(channel: grpc.Channel, method: Any, requests: list[Any], metadata: Any) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_class = message_factory.GetMessageClass(method.output_type)
    kwargs: dict[str, Any] = {
        "request_serializer": lambda message: message.SerializeToString(),
        "response_deserializer": response_class.FromString,
    }
    try:
        if method.client_streaming:
            answers = channel.stream_stream(path, **kwargs)(
                iter(requests), metadata=metadata, timeout=10
            )
            for _ in answers:
                pass
        else:
            channel.unary_unary(path, **kwargs)(requests[0], metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.full_name)
def test_generated_messages_never_break_the_service(
    fuzz_env: tuple[Server, grpc.Channel, LogRecorder], method: Any
) -> None:
    server, channel, recorder = fuzz_env
    requests = st.lists(messages(method.input_type), min_size=1, max_size=3)
    codes: set[grpc.StatusCode] = set()
    # Each example takes the next credential in turn, so every one is tried about equally often
    # (hypothesis's own choice can favour one, and then nothing may pass the credential check).
    turns = itertools.cycle(sorted(CREDENTIALS))

    @settings(
        max_examples=EXAMPLES_PER_RPC,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(requests=requests)
    def check(requests: list[Any]) -> None:
        credential = next(turns)
        # A Claim that waits would only slow the run down: keep `wait` short where it is set.
        for request in requests:
            if request.DESCRIPTOR.name == "ClaimRequest" and request.HasField("wait"):
                request.wait.seconds, request.wait.nanos = 0, min(abs(request.wait.nanos), 10**7)
        before = snapshot(server.database_url)
        code = call(channel, method, requests, CREDENTIALS[credential])
        codes.add(code)
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
            code,
            requests,
            recorder.lines[-5:],
        )
        if code != grpc.StatusCode.OK:
            assert snapshot(server.database_url) == before, (code, requests)

    check()
    # Some calls got past the credential check into the service itself.
    assert codes - {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}, codes
    logged = "\n".join(recorder.lines)
    for token in (WORKER_TOKEN, ADMIN_TOKEN, "fuzz-wrong-token-0123456789"):
        assert token not in logged
    assert "Traceback" not in logged, logged[-2000:]


def test_the_fuzz_reached_past_the_credential_check(
    fuzz_env: tuple[Server, grpc.Channel, LogRecorder],
) -> None:
    """A control: with the admin token, a well-formed request is answered (so the fuzz's
    refusals are not all the interceptor's)."""
    _, channel, _ = fuzz_env
    method = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].methods_by_name["GetJob"]
    request = admin_service_pb2.GetJobRequest(job_id=KNOWN_JOB_IDS[0])
    assert call(channel, method, [request], CREDENTIALS["admin"]) == grpc.StatusCode.OK
    unknown = admin_service_pb2.GetJobRequest(job_id=str(uuid.uuid4()))
    assert call(channel, method, [unknown], CREDENTIALS["admin"]) == grpc.StatusCode.NOT_FOUND
