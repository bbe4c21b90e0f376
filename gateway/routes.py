"""The admin REST API: each route validates, makes one or two AdminService calls, converts.

Routes never catch gRPC errors: they propagate to the one mapping in gateway.errors.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from google.protobuf import struct_pb2

from gateway import jobs
from gateway.client import QueueClient
from gateway.errors import ErrorResponse, documented
from gateway.guard import require_admin_key
from gateway.schemas import (
    AdvertResponse,
    EnqueueRequest,
    EnqueueResponse,
    JobActionRequest,
    JobActionResponse,
    JobListResponse,
    JobResponse,
    QueueName,
    RunningJobsResponse,
    StatsResponse,
    Status,
)
from jobqueue.v1 import admin_service_pb2 as pb

router = APIRouter(
    prefix="/api/ingest",
    dependencies=[Depends(require_admin_key)],
    responses={
        **documented(400, 401, 502, 503, 504),
        # Declaring the class also stops FastAPI from documenting a 422 the API never sends.
        "4XX": {"model": ErrorResponse, "description": "Any other client error, same shape."},
    },
)

CANCELLED_MESSAGE = "Job cancelled successfully"
CANCEL_PENDING_MESSAGE = (
    "Cancellation requested: the job is running and stops at its worker's next heartbeat"
)
RETRIED_MESSAGE = "Job queued for retry"

JobId = Annotated[UUID, Path(description="The job's UUID.")]
AdId = Annotated[UUID, Path(description="The advert's UUID (a succeeded job's output.ad_id).")]
QueueFilter = Annotated[QueueName | None, Query(description="Only jobs of this queue.")]


def queue_client(request: Request) -> QueueClient:
    client: QueueClient = request.app.state.queue_client
    return client


Client = Annotated[QueueClient, Depends(queue_client)]

# An operator may name themselves (the dashboard, a script); it is recorded beside the client
# address the gateway saw, in the queue service's audit trail of admin actions.
OPERATOR_HEADER = "x-operator"
MAX_OPERATOR_CHARS = 100


def operator(request: Request) -> str:
    """Who is behind an admin action, as far as the gateway knows: its client's address and,
    when sent, the X-Operator header (as stated by a caller who holds the admin key)."""
    who = f"gateway {request.client.host if request.client else 'unknown'}"
    named = "".join(ch for ch in request.headers.get(OPERATOR_HEADER, "") if ch.isprintable())
    return f"{who} ({named[:MAX_OPERATOR_CHARS]})" if named.strip() else who


def allow_query(*names: str) -> Any:
    """Refuse query parameters the route does not know: `?stat=true` is a typo, not a no-op."""

    def check(request: Request) -> None:
        for name in request.query_params:
            if name not in names:
                error = {"type": "extra_forbidden", "loc": ("query", name), "msg": "unknown"}
                raise RequestValidationError([error])

    return Depends(check)


@router.post(
    "/enqueue",
    status_code=201,
    response_model=EnqueueResponse,
    responses={
        200: {"model": EnqueueResponse, "description": "A job with this key already existed."},
        **documented(413, 415),
    },
    summary="Enqueue an ingestion job (idempotent)",
    dependencies=[allow_query()],
)
async def enqueue(
    body: Annotated[EnqueueRequest, Body()], request: Request, response: Response, client: Client
) -> EnqueueResponse:
    """201 with the new job's id, or 200 with the existing job's id and current status when a
    job with the same idempotency key exists (by default, derived from the job input, so the
    same request twice makes one job)."""
    job_input = struct_pb2.Struct()
    job_input.update(body.job_input())
    answer = await client.enqueue(
        pb.EnqueueJobRequest(
            input=job_input,
            priority=body.priority,
            max_attempts=body.max_attempts or 0,
            idempotency_key=body.idempotency_key or "",
        ),
        operator=operator(request),
    )
    if answer.already_existed:
        response.status_code = 200
    return EnqueueResponse(
        job_id=answer.job.id,
        status=jobs.status_name(answer.job.status),  # type: ignore[arg-type]
        already_existed=answer.already_existed,
    )


@router.get(
    "/jobs",
    response_model=JobListResponse,
    response_model_exclude_unset=True,
    summary="List jobs, newest first",
    dependencies=[allow_query("status", "queue", "limit", "stats", "cursor")],
)
async def list_jobs(
    client: Client,
    status: Annotated[Status | None, Query(description="Only jobs in this status.")] = None,
    queue: QueueFilter = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    stats: Annotated[bool, Query(description="Also return the counts by status.")] = False,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=1000, description="next_cursor of the previous page."),
    ] = None,
) -> JobListResponse:
    request = pb.ListJobsRequest(
        status=jobs.status_value(status) if status else None,
        queue=queue or "",
        page_size=limit,
        page_token=cursor or "",
    )
    if stats:
        # Two independent reads: run them together rather than back to back.
        page, counts = await asyncio.gather(client.list_jobs(request), client.stats())
    else:
        page = await client.list_jobs(request)
    result = JobListResponse(
        jobs=[jobs.job(job) for job in page.jobs], next_cursor=page.next_page_token or None
    )
    if stats:
        result.stats = jobs.stats(counts)
    return result


@router.get(
    "/jobs/{job_id}",
    response_model=JobResponse,
    responses=documented(404),
    summary="One job, with every column",
    dependencies=[allow_query()],
)
async def get_job(job_id: JobId, client: Client) -> JobResponse:
    return JobResponse(job=jobs.job(await client.get_job(str(job_id))))


@router.post(
    "/jobs/{job_id}",
    response_model=JobActionResponse,
    responses=documented(404, 409, 413, 415),
    summary="Cancel or retry a job",
    dependencies=[allow_query()],
)
async def job_action(
    job_id: JobId, body: Annotated[JobActionRequest, Body()], request: Request, client: Client
) -> JobActionResponse:
    """cancel: a QUEUED or RETRY job is CANCELLED at once ("Job cancelled successfully"); a
    RUNNING job is marked cancel_requested and ends CANCELLED when its worker next heartbeats.
    retry: a FAILED or CANCELLED job goes back to QUEUED with fresh attempts. Any other status:
    409 FAILED_PRECONDITION (reason INVALID_TRANSITION), and nothing changes."""
    if body.action == "cancel":
        cancelled = await client.cancel(str(job_id), operator(request))
        message = CANCEL_PENDING_MESSAGE if cancelled.cancellation_pending else CANCELLED_MESSAGE
        return JobActionResponse(success=True, message=message, job=jobs.job(cancelled.job))
    retried = await client.retry(str(job_id), operator(request))
    return JobActionResponse(success=True, message=RETRIED_MESSAGE, job=jobs.job(retried))


@router.get(
    "/stats",
    response_model=StatsResponse,
    summary="Counts by status and the queue's health",
    dependencies=[allow_query()],
)
async def queue_stats(request: Request, client: Client) -> StatsResponse:
    """health: "unhealthy" when a RUNNING job's heartbeat is overdue or the oldest runnable job
    has waited longer than GATEWAY_HEALTH_MAX_WAIT_SECONDS; otherwise "degraded" when FAILED
    (dead-letter) jobs exist; otherwise "healthy"."""
    answer = await client.stats()
    summary = jobs.summary(answer)
    return StatsResponse(
        stats=jobs.stats(answer),
        health=jobs.health(summary, request.app.state.config.health_max_wait_seconds),
        summary=summary,
    )


@router.get(
    "/running",
    response_model=RunningJobsResponse,
    summary="The RUNNING jobs, with stage, progress, run time and heartbeat age",
    dependencies=[allow_query("queue", "limit", "cursor")],
)
async def running_jobs(
    client: Client,
    queue: QueueFilter = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 500,
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=1000, description="next_cursor of the previous page."),
    ] = None,
) -> RunningJobsResponse:
    """What `python -m worker_service --show-running` prints, as JSON: each RUNNING job with
    `running_seconds` (since its claim) and `heartbeat_age_seconds`. A heartbeat age past the
    queue service's HEARTBEAT_TIMEOUT_SECONDS means the worker is gone and the job will be
    released. `job.locked_by` names the worker."""
    page = await client.running_jobs(
        pb.ListRunningJobsRequest(queue=queue or "", page_size=limit, page_token=cursor or "")
    )
    return RunningJobsResponse(
        jobs=[jobs.running(job) for job in page.jobs], next_cursor=page.next_page_token or None
    )


@router.get(
    "/adverts/{ad_id}",
    response_model=AdvertResponse,
    responses={404: {"model": ErrorResponse, "description": "No such advert."}},
    summary="The advert a job produced: media facts, keyframes, transcript, analysis",
    dependencies=[allow_query()],
)
async def get_advert(ad_id: AdId, client: Client) -> AdvertResponse:
    """The record the pipeline stored (AdvertService.GetAdvert), found by a SUCCEEDED job's
    `output.ad_id`. Chunks come without their embedding vectors."""
    return AdvertResponse(advert=jobs.advert(await client.get_advert(str(ad_id))))
