"""QueueService: the worker-facing RPCs. Validate, one store call, convert."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from jobqueue import limits
from jobqueue.v1 import job_pb2, queue_service_pb2_grpc
from jobqueue.v1 import queue_service_pb2 as pb
from queue_service import bounds, convert
from queue_service.batching import Coalescer
from queue_service.claims import Claimer
from queue_service.errors import InvalidArgument, RowLocked, grpc_errors, grpc_stream_errors
from queue_service.orphans import Orphans
from queue_service.store import (
    Beat,
    Claimed,
    Completion,
    Failure,
    Release,
    Settled,
    Store,
    raise_for_outcome,
)

log = logging.getLogger(__name__)

EntryT = TypeVar("EntryT")

MAX_CLAIM = 1000
MAX_CLAIM_WAIT_SECONDS = 60.0
MAX_BATCH = 1000
MAX_BEATS = 10_000
# Beats per statement (a message with more is a statement of its own).
MAX_BATCH_BEATS = 2_000
MAX_TEXT = limits.MAX_TEXT_CHARS
# A Claim's answer stays under this many bytes: well under gRPC's default 4 MiB receive limit,
# so any client (grpcurl too) can read it. Jobs past it are handed back at once, unspent.
MAX_CLAIM_ANSWER_BYTES = 3 * 1024 * 1024
# What a job in a ClaimResponse costs beyond its own size: a tag and a length of up to 5 bytes.
_ENTRY_OVERHEAD = 6
# The error code of a claimed job that no client could read (convert.Undeliverable): it is
# failed at once, for good, since every later claim of it would fail the same way.
UNDELIVERABLE_CODE = "INVALID_INPUT"
MAX_STAGE = 100
# A stream's beats awaiting their answers: past this, the service stops reading the stream until
# answers go out, so a client that writes without reading is held back by gRPC's flow control
# instead of growing the service's memory. One full message (MAX_BEATS) always fits.
MAX_PENDING_BEATS = 10_000
# How long a stream whose requests ended waits for a cancellation before it counts as closed by
# its client (Heartbeat says why).
CANCEL_SETTLE_SECONDS = 0.1

ACTIONS = {
    "continue": pb.HEARTBEAT_ACTION_CONTINUE,
    "cancel": pb.HEARTBEAT_ACTION_CANCEL,
    "lease_lost": pb.HEARTBEAT_ACTION_LEASE_LOST,
    # Its row was locked: the beat was kept beside it (heartbeat.sql); the worker carries on.
    "deferred": pb.HEARTBEAT_ACTION_CONTINUE,
}
# The one action that says a beat's job is not alive under its lease on this stream.
DEAD = "lease_lost"

OUTCOMES = {
    "ok": pb.OUTCOME_OK,
    "lease_lost": pb.OUTCOME_LEASE_LOST,
    "not_found": pb.OUTCOME_NOT_FOUND,
    # Its row was locked: skipped, nothing changed (settle.sql); the worker sends it again.
    "locked": pb.OUTCOME_LOCKED,
}


class QueueServicer(queue_service_pb2_grpc.QueueServiceServicer):
    def __init__(self, store: Store, claimer: Claimer, orphans: Orphans | None = None) -> None:
        self._claimer = claimer
        # Single-job calls from many workers meet here and reach the database together.
        # One caller's bad value, or a row another transaction holds, must not fail the others
        # it shares a statement with.
        bad_input = (InvalidArgument, RowLocked)
        # An item is one message's beats (one, or a batch): every message is one future.
        self.heartbeats: Coalescer[Sequence[Beat], list[str]] = Coalescer(
            self._write_beats, max_batch=MAX_BATCH_BEATS, size=len, isolate=bad_input
        )
        self.completions: Coalescer[Completion, Settled] = Coalescer(
            store.complete, isolate=bad_input
        )
        self.failures: Coalescer[Failure, Settled] = Coalescer(store.fail, isolate=bad_input)
        self.releases: Coalescer[Release, Settled] = Coalescer(store.release, isolate=bad_input)
        self._coalescers = (self.heartbeats, self.completions, self.failures, self.releases)
        self._store = store
        # Releases the jobs of streams that break (their worker died).
        self.orphans = orphans or Orphans(store, grace_seconds=0, give_up_seconds=0)
        # The open heartbeat streams: they end at once when the service stops (the workers
        # reconnect, to this service's successor) instead of holding the shutdown for its grace.
        self._streams: set[_Stream] = set()
        self._closing = False
        # How many times a stream's reading paused because its answers were not going out.
        self.stream_pauses = 0
        # Settles of undelivered claims that outlive their call.
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        for coalescer in self._coalescers:
            coalescer.start()
        self.orphans.start()

    async def _write_beats(self, messages: Sequence[Sequence[Beat]]) -> list[list[str]]:
        """The beats of every message, in one statement; each message's actions."""
        actions = iter(await self._store.heartbeat([beat for beats in messages for beat in beats]))
        return [[next(actions) for _ in beats] for beats in messages]

    def close_streams(self) -> None:
        """The service is stopping: every stream ends now, and releases nothing (its worker is
        alive and reconnects to the successor)."""
        self._closing = True
        for stream in list(self._streams):
            stream.close()

    async def stop(self) -> None:
        await self.orphans.stop()
        await asyncio.gather(*self._background, return_exceptions=True)
        for coalescer in self._coalescers:
            await coalescer.stop()

    @grpc_errors
    async def Claim(
        self, request: pb.ClaimRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClaimResponse:
        worker_id = bounds.worker_id(request.worker_id)
        if not 1 <= request.max_jobs <= MAX_CLAIM:
            raise InvalidArgument(f"max_jobs must be 1..{MAX_CLAIM}", field="max_jobs")
        queue = bounds.queue_name(request.queue)
        wait = (
            convert.seconds(request.wait, "wait", MAX_CLAIM_WAIT_SECONDS)
            if request.HasField("wait")
            else 0.0
        )
        # Never wait past the caller's own deadline: answer empty just before it instead.
        remaining = context.time_remaining()
        if remaining is not None:
            wait = max(0.0, min(wait, remaining - 0.5))
        rows = await self._claimer.claim(worker_id, request.max_jobs, queue, wait)
        response = pb.ClaimResponse()
        filled = _fill_answer(response, rows)
        if filled.undeliverable or filled.handed_back:
            # Settled whatever becomes of this call; a caller that goes away meanwhile gets
            # nothing, so what its answer held is handed back too (as claims.py does for a
            # caller that goes away during the claim statement).
            settling = self._in_background(self._settle_undelivered(filled))
            try:
                await asyncio.shield(settling)
            except asyncio.CancelledError:
                if filled.delivered:
                    self._in_background(
                        self._claimer.release(filled.delivered, "claim cancelled by the caller")
                    )
                raise
        return response

    async def _settle_undelivered(self, filled: _Filled) -> None:
        """Fail the claimed jobs that no client could read; hand back those the answer had no
        room for (QUEUED at once, the attempt not counted: release_job)."""
        if filled.undeliverable:
            for failure in filled.undeliverable:
                log.error(
                    "claimed job cannot be delivered; failed for good job_id=%s lease=%s: %s",
                    failure.job_id,
                    failure.lease,
                    failure.message,
                )
            try:
                await self._store.fail(filled.undeliverable)
            except Exception:
                log.exception(
                    "could not fail %d undeliverable job(s); the stale sweep will release them",
                    len(filled.undeliverable),
                )
        if filled.handed_back:
            log.info(
                "claim answer full (%d bytes): handing back %d job(s)",
                MAX_CLAIM_ANSWER_BYTES,
                len(filled.handed_back),
            )
            await self._claimer.release(
                filled.handed_back,
                f"the claim's answer was full ({MAX_CLAIM_ANSWER_BYTES} bytes)",
            )

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    @grpc_stream_errors
    async def Heartbeat(
        self,
        request_iterator: AsyncIterator[pb.HeartbeatRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.HeartbeatResponse]:
        # Beats are answered as they are written, not one at a time: the beats of all streams
        # that arrive together travel to the database in one statement, and each beat costs a
        # future, not a task.
        stream = _Stream(self.orphans.horizon_seconds)
        self._streams.add(stream)
        if self._closing:
            stream.close()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    parsed = _parse(request)
                    written = None
                    if parsed.beats:
                        written = self.heartbeats.submit_nowait(parsed.beats)
                        if self.orphans.enabled:
                            stream.track(parsed.beats, written)
                    stream.add((request, parsed, written))
                    if stream.full():
                        self.stream_pauses += 1
                        if not stream.paused:  # once a stream
                            log.info(
                                "heartbeat stream: %d beats await answers that are not going "
                                "out; reading paused",
                                stream.pending,
                            )
                        await stream.room()
            finally:
                stream.end()

        reader = asyncio.create_task(read())
        try:
            while (item := await stream.next()) is not None:
                request, parsed, written = item
                try:
                    actions = await written if written is not None else []
                except Exception:
                    stream.failed = True  # the service's own failure: the worker reconnects
                    raise
                yield _answer(request, parsed, actions)
                stream.answered(parsed)
            # Every beat answered after the requests ended. A client that closed its side ends
            # them so, and so does one that went away (gRPC reads both as the end of the
            # requests), but the second is also cancelled, in the same turn of the loop or the
            # next: a moment's wait lets that cancellation land here, as CancelledError, before
            # the stream counts as closed by its client and its jobs are left alone.
            if stream.jobs and not stream.closed:
                await asyncio.sleep(CANCEL_SETTLE_SECONDS)
            stream.half_closed = True
        finally:
            self._streams.discard(stream)
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            if stream.lost() and not self._closing:
                self.orphans.stream_lost(stream.jobs, stream.writes)
            else:
                stream.drop()

    @grpc_errors
    async def Complete(
        self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteResponse:
        settled = await _settled(self.completions, _completion(request))
        response = pb.CompleteResponse()
        convert.fill_settled(response.job, settled, request.output)
        return response

    @grpc_errors
    async def CompleteBatch(
        self, request: pb.CompleteBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteBatchResponse:
        entries = [_completion(entry) for entry in _batch(request.entries)]
        response = pb.CompleteBatchResponse()
        _fill_results(response.results, await self._store.complete(entries))
        return response

    @grpc_errors
    async def Fail(
        self, request: pb.FailRequest, context: grpc.aio.ServicerContext
    ) -> pb.FailResponse:
        response = pb.FailResponse()
        convert.fill_settled(response.job, await _settled(self.failures, _failure(request)))
        return response

    @grpc_errors
    async def Release(
        self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseResponse:
        release = Release(
            job_id=convert.parse_uuid(request.job_id),
            lease=_lease(request.lease),
            reason=_printable(request.reason[:MAX_TEXT]),
        )
        response = pb.ReleaseResponse()
        convert.fill_settled(response.job, await _settled(self.releases, release))
        return response

    @grpc_errors
    async def FailBatch(
        self, request: pb.FailBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.FailBatchResponse:
        entries = [_failure(entry) for entry in _batch(request.entries)]
        response = pb.FailBatchResponse()
        _fill_results(response.results, await self._store.fail(entries))
        return response


@dataclass(slots=True)
class _Parsed:
    """One HeartbeatRequest read: its well-formed beats, and the refusals of the rest (by
    position in `beats`), or of the whole message."""

    beats: list[Beat]
    refused: dict[int, str]
    refusal: str = ""


# A Heartbeat request read, and the future of its well-formed beats' actions (None: none).
_Item = tuple[pb.HeartbeatRequest, _Parsed, "asyncio.Future[list[str]] | None"]
_Job = tuple[UUID, int]


class _Stream:
    """One Heartbeat stream: what it has yet to answer, in the order its beats came, at most
    MAX_PENDING_BEATS of them; the jobs beaten alive on it; and how it ended."""

    def __init__(self, horizon_seconds: float) -> None:
        self._items: deque[_Item] = deque()
        self._ready = asyncio.Event()
        self._ended = False
        self.pending = 0
        self._room = asyncio.Event()
        self._room.set()
        self.paused = False
        # Each job (id, lease) whose latest written beat on this stream found it alive, with
        # when that beat was written (the loop's clock), oldest first. A job not beaten here for
        # `horizon_seconds` (the heartbeat timeout) is forgotten: the stale sweep has it, and a
        # long-lived stream of a busy worker does not remember every job it ever beat.
        self.jobs: OrderedDict[_Job, float] = OrderedDict()
        self._horizon = horizon_seconds
        # The writes of its beats not yet done.
        self.writes: set[asyncio.Future[list[str]]] = set()
        # The client closed its side: it is done with the stream (a worker leaving, grpcurl).
        self.half_closed = False
        # The service ended it: a failed write, or the service's shutdown.
        self.failed = False
        self.closed = False

    def track(self, beats: list[Beat], written: asyncio.Future[list[str]]) -> None:
        self.writes.add(written)

        def done(future: asyncio.Future[list[str]]) -> None:
            self.writes.discard(future)
            if future.cancelled() or future.exception() is not None:
                return
            jobs = self.jobs
            now = asyncio.get_running_loop().time()
            for beat, action in zip(beats, future.result(), strict=True):
                key = (beat.job_id, beat.lease)
                if action == DEAD:
                    jobs.pop(key, None)
                else:
                    jobs[key] = now
                    jobs.move_to_end(key)
            forgotten = now - self._horizon
            while jobs and next(iter(jobs.values())) < forgotten:
                jobs.popitem(last=False)

        written.add_done_callback(done)

    def add(self, item: _Item) -> None:
        self._items.append(item)
        self.pending += _size(item[1])
        self._ready.set()

    def full(self) -> bool:
        if self.pending < MAX_PENDING_BEATS:
            return False
        self._room.clear()
        return True

    async def room(self) -> None:
        self.paused = True
        await self._room.wait()

    def answered(self, parsed: _Parsed) -> None:
        self.pending -= _size(parsed)
        if self.pending < MAX_PENDING_BEATS:
            self._room.set()

    def end(self) -> None:
        """No more beats: answer those that came, then end the stream."""
        self._ended = True
        self._ready.set()

    def close(self) -> None:
        """End the stream now, by the service (unanswered beats are written all the same)."""
        self.closed = True
        self._items.clear()
        self.end()

    def lost(self) -> bool:
        """Whether it ended by neither side's choice: the client went away (died, its
        connection dropped, its deadline passed)."""
        return not (self.half_closed or self.failed or self.closed)

    def drop(self) -> None:
        """Unstarted writes of a stream that ended are not needed any more."""
        for future in self.writes:
            future.cancel()

    async def next(self) -> _Item | None:
        while not self._items:
            if self._ended:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


def _size(parsed: _Parsed) -> int:
    return max(1, len(parsed.beats) + len(parsed.refused))


class _Filled(NamedTuple):
    """A Claim's claimed rows, by what became of them."""

    delivered: list[Claimed]
    # Their input cannot be delivered, or is larger than a whole answer: failed for good.
    undeliverable: list[Failure]
    # The answer had no room left: handed back.
    handed_back: list[Claimed]


def _fill_answer(response: pb.ClaimResponse, rows: Sequence[Claimed]) -> _Filled:
    """Fill a Claim's answer with the claimed rows, in order, while it stays under
    MAX_CLAIM_ANSWER_BYTES; one row that cannot be delivered leaves the others of its batch in
    the answer."""
    jobs = response.jobs
    size = 0
    delivered: list[Claimed] = []
    undeliverable: list[Failure] = []
    claimed_jobs = convert.ClaimedJobs()
    for index, row in enumerate(rows):
        job = jobs.add()
        try:
            claimed_jobs.fill(job, row)
        except convert.Undeliverable as error:
            del jobs[-1]
            undeliverable.append(_undeliverable(row, f"its input holds {error}"))
            continue
        cost = job.ByteSize() + _ENTRY_OVERHEAD
        if size + cost <= MAX_CLAIM_ANSWER_BYTES:
            size += cost
            delivered.append(row)
            continue
        del jobs[-1]
        if cost > MAX_CLAIM_ANSWER_BYTES:
            undeliverable.append(
                _undeliverable(row, f"it is {cost} bytes, more than a claim's whole answer")
            )
            continue
        return _Filled(delivered, undeliverable, list(rows[index:]))
    return _Filled(delivered, undeliverable, [])


def _undeliverable(row: Claimed, why: str) -> Failure:
    return Failure(
        job_id=row.id,
        lease=row.lease,
        error_code=UNDELIVERABLE_CODE,
        message=f"the job cannot be delivered to a worker: {why}",
        retryable=False,
    )


async def _settled(coalescer: Coalescer[EntryT, Settled], entry: EntryT) -> Settled:
    """A single-job transition: its shared statement's outcome, or the caller's error."""
    settled = await coalescer.submit(entry)
    raise_for_outcome(settled)
    return settled


def _batch(entries: Sequence[EntryT]) -> Sequence[EntryT]:
    if not 1 <= len(entries) <= MAX_BATCH:
        raise InvalidArgument(f"a batch carries 1..{MAX_BATCH} entries", field="entries")
    return entries


def _lease(value: int) -> int:
    if value < 1:
        raise InvalidArgument("lease must be the positive lease of a claim", field="lease")
    return value


def _printable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; an error message keeps everything else."""
    return text.replace("\x00", "\ufffd")


def _parse(request: pb.HeartbeatRequest) -> _Parsed:
    """A message's beats, each checked on its own: a malformed one is refused alone."""
    if not request.beats:
        try:
            return _Parsed([_beat(request)], {})
        except InvalidArgument as error:
            return _Parsed([], {}, error.message)
    if request.job_id:
        return _Parsed([], {}, "a heartbeat carries one beat (job_id) or several (beats), not both")
    if len(request.beats) > MAX_BEATS:
        return _Parsed([], {}, f"a heartbeat carries at most {MAX_BEATS} beats")
    beats: list[Beat] = []
    refused: dict[int, str] = {}
    for position, beat in enumerate(request.beats):
        try:
            beats.append(_beat(beat))
        except InvalidArgument as error:
            refused[position] = error.message
    return _Parsed(beats, refused)


def _beat(request: pb.HeartbeatRequest | pb.JobBeat) -> Beat:
    if not 0.0 <= request.progress <= 1.0:
        raise InvalidArgument("progress must be 0..1", field="progress")
    if len(request.stage) > MAX_STAGE or "\x00" in request.stage:
        raise InvalidArgument(f"stage is at most {MAX_STAGE} printable characters", field="stage")
    return Beat(
        job_id=convert.parse_uuid(request.job_id),
        lease=_lease(request.lease),
        stage=request.stage,
        progress=request.progress,
    )


def _answer(
    request: pb.HeartbeatRequest, parsed: _Parsed, actions: list[str]
) -> pb.HeartbeatResponse:
    """A message's answer: each beat's action, in the order of its beats; INVALID with the
    reason for each refused beat (or for the whole message)."""
    if parsed.refusal or not request.beats:
        action = ACTIONS[actions[0]] if actions else pb.HEARTBEAT_ACTION_INVALID
        return pb.HeartbeatResponse(
            job_id=request.job_id,
            lease=request.lease,
            action=action,
            message=parsed.refusal,
        )
    response = pb.HeartbeatResponse()
    answered = response.beats
    if not parsed.refused:
        for beat, name in zip(request.beats, actions, strict=True):
            answered.add(job_id=beat.job_id, lease=beat.lease, action=ACTIONS[name])
        return response
    written = iter(actions)
    for position, beat in enumerate(request.beats):
        refusal = parsed.refused.get(position)
        if refusal is None:
            answered.add(job_id=beat.job_id, lease=beat.lease, action=ACTIONS[next(written)])
        else:
            answered.add(
                job_id=beat.job_id,
                lease=beat.lease,
                action=pb.HEARTBEAT_ACTION_INVALID,
                message=refusal,
            )
    return response


def _completion(request: pb.CompleteRequest) -> Completion:
    output_json = convert.struct_json(request.output, "output")
    if "\\u0000" in output_json:
        raise InvalidArgument(
            "output cannot hold NUL characters (jsonb refuses them)", field="output"
        )
    return Completion(
        job_id=convert.parse_uuid(request.job_id),
        lease=_lease(request.lease),
        output_json=output_json,
    )


def _failure(request: pb.FailRequest) -> Failure:
    retry_after = None
    if request.HasField("retry_after"):
        retry_after = convert.seconds(
            request.retry_after, "retry_after", limits.MAX_RETRY_AFTER_SECONDS
        )
    return Failure(
        job_id=convert.parse_uuid(request.job_id),
        lease=_lease(request.lease),
        error_code=_printable(request.error_code[: limits.MAX_ERROR_CODE_CHARS]),
        message=_printable(request.message[:MAX_TEXT]),
        retryable=request.retryable,
        retry_after_seconds=retry_after,
    )


def _fill_results(
    results: RepeatedCompositeFieldContainer[pb.EntryResult], outcomes: Sequence[Settled]
) -> None:
    """A batch's answer, one result per entry in its order, added in place (a list passed to
    the response's constructor would be copied)."""
    add = results.add
    unspecified = job_pb2.JOB_STATUS_UNSPECIFIED
    for outcome in outcomes:
        add(
            job_id=str(outcome.job_id),
            outcome=OUTCOMES[outcome.outcome],
            status=convert.STATUS_TO_PROTO.get(outcome.status or "", unspecified),
        )
