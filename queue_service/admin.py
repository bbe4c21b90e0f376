"""AdminService: the producer- and operator-facing RPCs. Validate, one store call, convert.

Single EnqueueJob calls that arrive together are enqueued by one statement and one commit (group
commit, batching.Coalescer), so concurrent producers share the cost of a commit. Enqueue, cancel,
retry and release-stale are recorded in the audit trail (audit.py), which GetJob shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from jobqueue import ingest_input, limits, tracing
from jobqueue.ingest_input import InputError
from jobqueue.v1 import admin_service_pb2 as pb
from jobqueue.v1 import admin_service_pb2_grpc, job_pb2
from queue_service import bounds, convert
from queue_service.audit import AuditLog, audited
from queue_service.auth import current_caller
from queue_service.batching import Coalescer
from queue_service.config import Config
from queue_service.errors import InvalidArgument, grpc_errors
from queue_service.store import Enqueued, NewJob, Row, Store

MAX_ENQUEUE_BATCH = 1000
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_RUNNING_PAGE_SIZE = 1000
DEFAULT_RUNNING_PAGE_SIZE = 500
STATUSES = ("QUEUED", "RUNNING", "SUCCEEDED", "RETRY", "FAILED", "CANCELLED")


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: Store, config: Config, audit: AuditLog) -> None:
        self._store = store
        self._config = config
        self.audit = audit
        # One caller's bad value must not fail the others it shares a statement with.
        self.enqueues: Coalescer[NewJob, tuple[Enqueued, Row | None]] = Coalescer(
            store.enqueue, isolate=(InvalidArgument,)
        )

    def start(self) -> None:
        self.enqueues.start()
        self.audit.start()

    async def stop(self) -> None:
        await self.enqueues.stop()
        await self.audit.stop()

    @grpc_errors
    @audited("enqueue", None)  # the enqueue writes its entries itself
    async def EnqueueJob(
        self, request: pb.EnqueueJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnqueueJobResponse:
        new_job = _new_job(request, self._config.local_media_root)
        response = pb.EnqueueJobResponse()
        _answer(response, new_job, request, await self.enqueues.submit(new_job))
        return response

    @grpc_errors
    @audited("enqueue", None)  # the enqueue writes its entries itself
    async def EnqueueJobs(
        self, request: pb.EnqueueJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnqueueJobsResponse:
        if not 1 <= len(request.jobs) <= MAX_ENQUEUE_BATCH:
            raise InvalidArgument(f"jobs must hold 1..{MAX_ENQUEUE_BATCH} entries", field="jobs")
        new_jobs = [_new_job(job, self._config.local_media_root) for job in request.jobs]
        results = await self._store.enqueue(new_jobs)
        response = pb.EnqueueJobsResponse()
        answers = response.results
        for new_job, job, result in zip(new_jobs, request.jobs, results, strict=True):
            _answer(answers.add(), new_job, job, result)
        return response

    @grpc_errors
    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.Job:
        job_id = convert.parse_uuid(request.job_id)
        job = convert.job(await self._store.get_job(job_id))
        job.audit_trail.extend(await self.audit.trail(job_id))
        return job

    @grpc_errors
    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be 1..{MAX_PAGE_SIZE}", field="page_size")
        status = None
        if request.status != job_pb2.JOB_STATUS_UNSPECIFIED:
            if request.status not in convert.PROTO_TO_STATUS:
                raise InvalidArgument("unknown status", field="status")
            status = convert.PROTO_TO_STATUS[request.status]
        after = convert.decode_page_token(request.page_token) if request.page_token else None
        rows = await self._store.list_jobs(
            status=status,
            queue=bounds.queue_filter(request.queue),
            limit=page_size + 1,
            after=after,
        )
        page, more = rows[:page_size], len(rows) > page_size
        return pb.ListJobsResponse(
            jobs=[convert.job(row) for row in page],
            next_page_token=convert.encode_page_token(page[-1]) if more else "",
        )

    @grpc_errors
    @audited(
        "cancel",
        lambda _, response: [
            (response.job.id, "cancellation_pending" if response.cancellation_pending else "ok")
        ],
        lambda request: request.job_id,
    )
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelJobResponse:
        row, pending = await self._store.cancel(convert.parse_uuid(request.job_id))
        return pb.CancelJobResponse(job=convert.job(row), cancellation_pending=pending)

    @grpc_errors
    @audited("retry", lambda _, job: [(job.id, "ok")], lambda request: request.job_id)
    async def RetryJob(
        self, request: pb.RetryJobRequest, context: grpc.aio.ServicerContext
    ) -> job_pb2.Job:
        return convert.job(await self._store.retry(convert.parse_uuid(request.job_id)))

    @grpc_errors
    async def GetQueueStats(
        self, request: pb.GetQueueStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueueStats:
        row = await self._store.queue_stats(
            bounds.queue_filter(request.queue), self._config.heartbeat_timeout_seconds
        )
        by_status = {status: int(row["by_status"].get(status, 0)) for status in STATUSES}
        return pb.QueueStats(
            by_status=by_status,
            total=sum(by_status.values()),
            stale_running=row["stale_running"],
            oldest_runnable_age_seconds=float(row["oldest_runnable_age_seconds"]),
        )

    @grpc_errors
    async def ListRunningJobs(
        self, request: pb.ListRunningJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunningJobsResponse:
        page_size = request.page_size or DEFAULT_RUNNING_PAGE_SIZE
        if not 1 <= page_size <= MAX_RUNNING_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be 1..{MAX_RUNNING_PAGE_SIZE}", field="page_size"
            )
        after = convert.decode_page_token(request.page_token) if request.page_token else None
        rows = await self._store.running_jobs(
            bounds.queue_filter(request.queue), limit=page_size + 1, after=after
        )
        page, more = rows[:page_size], len(rows) > page_size
        return pb.ListRunningJobsResponse(
            jobs=[
                job_pb2.RunningJob(
                    job=convert.job(row),
                    running=convert.duration(float(row["running_seconds"])),
                    heartbeat_age=convert.duration(float(row["heartbeat_age_seconds"])),
                )
                for row in page
            ],
            next_page_token=convert.encode_page_token(page[-1], "locked_at") if more else "",
        )

    @grpc_errors
    @audited(
        "release_stale",
        lambda _, response: (
            [(job.job_id, f"released:{job.reason}") for job in response.jobs]
            or [(None, "released:none")]
        ),
    )
    async def ReleaseStaleJobs(
        self, request: pb.ReleaseStaleJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseStaleJobsResponse:
        rows = await self._store.release_stale(
            self._config.heartbeat_timeout_seconds, self._config.lock_timeout_seconds
        )
        return released_response(rows)


def released_response(rows: Sequence[dict[str, object]]) -> pb.ReleaseStaleJobsResponse:
    return pb.ReleaseStaleJobsResponse(
        released_count=len(rows),
        jobs=[
            pb.ReleasedJob(
                job_id=str(row["job_id"]),
                reason=str(row["reason"]),
                status=convert.STATUS_TO_PROTO[str(row["status"])],
            )
            for row in rows
        ],
    )


def _answer(
    response: pb.EnqueueJobResponse,
    new_job: NewJob,
    request: pb.EnqueueJobRequest,
    result: tuple[Enqueued, Row | None],
) -> None:
    enqueued, existing = result
    if existing is not None:
        response.job.CopyFrom(convert.job(existing))
        response.already_existed = True
    else:
        convert.fill_enqueued(
            response.job, enqueued, new_job.queue, new_job.priority, request.input
        )


def _new_job(request: pb.EnqueueJobRequest, local_media_root: Path | None) -> NewJob:
    """A request's job, checked against the bounds in jobqueue.limits and the one input schema
    (jobqueue.ingest_input): what the service stores, a worker's pipeline can start on."""
    input_ = request.input
    if not input_.fields:
        raise InvalidArgument("input is required: a non-empty JSON object", field="input")
    value = convert.struct_object(input_)
    # ASCII JSON, so its length is its size in bytes.
    input_json = convert.json_text(value, "input")
    if len(input_json) > limits.MAX_INPUT_BYTES:
        raise InvalidArgument(
            f"input is larger than {limits.MAX_INPUT_BYTES} bytes as JSON", field="input"
        )
    if "\\u0000" in input_json:
        raise InvalidArgument(
            "input cannot hold NUL characters (jsonb refuses them)", field="input"
        )
    try:
        ingest_input.parse(value, local_media_root)
    except InputError as error:
        field = f"input.{error.field}" if error.field else "input"
        raise InvalidArgument(f"invalid input: {error.message}", field=field) from None
    queue = bounds.queue_name(request.queue)
    max_attempts = request.max_attempts
    if not 0 <= max_attempts <= limits.MAX_ATTEMPTS_MAX:
        raise InvalidArgument(
            f"max_attempts must be 1..{limits.MAX_ATTEMPTS_MAX} (0 for the default)",
            field="max_attempts",
        )
    priority = request.priority
    if not limits.PRIORITY_MIN <= priority <= limits.PRIORITY_MAX:
        raise InvalidArgument(
            f"priority must be {limits.PRIORITY_MIN}..{limits.PRIORITY_MAX}", field="priority"
        )
    key = request.idempotency_key
    problem = limits.idempotency_key_problem(key)
    if problem is not None:
        raise InvalidArgument(problem, field="idempotency_key")
    run_after = (
        convert.to_datetime(request.run_after, "run_after")
        if request.HasField("run_after")
        else None
    )
    # With tracing on, the job keeps the trace of this call (the caller's, e.g. a REST request);
    # the caller is named in its audit entry, which the enqueue's statement writes.
    return NewJob(
        input_json,
        queue,
        priority,
        max_attempts,
        key,
        run_after,
        tracing.traceparent(),
        current_caller.get(),
    )
