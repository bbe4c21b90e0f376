"""The REST API's request and response models: the OpenAPI document is generated from these.

Requests are strict (JSON types only, no coercion) and closed (unknown fields are refused), so a
typo such as `"s3key"` is an error instead of a job with a missing key. The source fields follow
the one input schema (jobqueue.ingest_input), which the queue service applies again (with
LOCAL_MEDIA_ROOT, which only it knows); the bounds are jobqueue.limits, the queue service's own.
Strings are checked here for what PostgreSQL and protobuf cannot store (NUL and other control
characters, lone surrogates): those would otherwise fail deep in the stack as a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from jobqueue import ingest_input, limits
from jobqueue.ingest_input import MAX_PATH_BYTES, MAX_S3_KEY_BYTES, InputError

STATUSES = ("QUEUED", "RUNNING", "SUCCEEDED", "RETRY", "FAILED", "CANCELLED")
Status = Literal["QUEUED", "RUNNING", "SUCCEEDED", "RETRY", "FAILED", "CANCELLED"]
Health = Literal["healthy", "degraded", "unhealthy"]


def _input_rule(rule: Callable[[Any], str]) -> Callable[[str], str]:
    """A rule of the one input schema (jobqueue.ingest_input) as a pydantic validator: the
    queue service applies the same rules, and LOCAL_MEDIA_ROOT (which only it knows) on top."""

    def validate(value: str) -> str:
        try:
            return rule(value)
        except InputError as error:
            raise ValueError(error.message.removeprefix(f"{error.field} ")) from None

    return validate


def _whole_number(value: Any) -> Any:
    """JSON Schema's integer: 5 and 5.0 are the same number; true and "5" are not numbers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Strict int after the conversion above, so booleans, strings and 1.5 are still refused.
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]

S3Key = Annotated[
    str,
    Field(min_length=1, max_length=MAX_S3_KEY_BYTES, examples=["videos/test-ad.mp4"]),
    AfterValidator(_input_rule(ingest_input.s3_key)),
]
LocalPath = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PATH_BYTES, examples=["/data/videos/test-ad.mp4"]),
    AfterValidator(_input_rule(ingest_input.local_path)),
]


def _caller_key(value: str) -> str:
    if limits.DERIVED_KEY.fullmatch(value):
        raise ValueError(
            "64 lowercase hex characters are reserved for the keys derived from the input; "
            "send another form (e.g. with a prefix)"
        )
    return value


IdempotencyKey = Annotated[
    str,
    Field(min_length=1, max_length=limits.MAX_IDEMPOTENCY_KEY_CHARS),
    AfterValidator(ingest_input.storable_text),
    AfterValidator(_caller_key),
]
# A queue name as a filter: what the queue service accepts as one.
QueueName = Annotated[
    str,
    Field(min_length=1, max_length=limits.MAX_QUEUE_FILTER_CHARS),
    AfterValidator(ingest_input.storable_text),
]


class _EnqueueOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    priority: WholeNumber = Field(
        default=0, ge=limits.PRIORITY_MIN, le=limits.PRIORITY_MAX, description="Higher runs first."
    )
    max_attempts: WholeNumber | None = Field(
        default=None,
        ge=1,
        le=limits.MAX_ATTEMPTS_MAX,
        description="Attempts before FAILED; default 5.",
    )
    idempotency_key: IdempotencyKey | None = Field(
        default=None,
        description=(
            "Enqueueing a known key returns the existing job. Default: derived by the queue "
            "service from the job input, so identical requests make one job."
        ),
    )


class S3Source(_EnqueueOptions):
    source_type: Literal["s3"]
    s3_key: S3Key = Field(description="Object key in S3_BUCKET: no leading '/', no '..'.")

    def job_input(self) -> dict[str, Any]:
        return {"source_type": "s3", "s3_key": self.s3_key}


class LocalSource(_EnqueueOptions):
    source_type: Literal["local"]
    path: LocalPath = Field(
        description=(
            "A file path on the worker host; no '..' segments. Absolute, or relative to the "
            "queue service's LOCAL_MEDIA_ROOT; inside LOCAL_MEDIA_ROOT when that is set."
        )
    )

    def job_input(self) -> dict[str, Any]:
        return {"source_type": "local", "path": self.path}


EnqueueRequest = Annotated[S3Source | LocalSource, Field(discriminator="source_type")]


class EnqueueResponse(BaseModel):
    job_id: str
    status: Status = Field(description="The job's current status (QUEUED for a new job).")
    already_existed: bool


class JobError(BaseModel):
    attempt: int
    time: datetime | None
    code: str | None
    message: str | None


class AuditEntry(BaseModel):
    at: datetime | None
    action: str = Field(description="enqueue, cancel, retry or release_stale.")
    role: str = Field(description="The role the credential proved: admin, worker, admin+worker.")
    credential: str = Field(
        description="Its name (QUEUE_ADMIN_TOKEN, cert:<name>), never its value."
    )
    operator: str | None = Field(description="Who the gateway says was behind the call.")
    outcome: str = Field(description="ok, already_existed, released:<reason>, or CODE:REASON.")


class Job(BaseModel):
    """One row of `ingestion_jobs`, by its column names. Absent values are null."""

    id: str
    queue: str
    status: Status
    priority: int
    attempts: int
    max_attempts: int
    run_after: datetime | None
    locked_at: datetime | None
    locked_by: str | None
    input: dict[str, Any] | None
    output: dict[str, Any] | None
    idempotency_key: str | None
    last_error: str | None
    error_code: str | None
    errors: list[JobError] = Field(description="The last 20 failed attempts, oldest first.")
    errors_total: int = Field(
        description="Failed attempts over the job's life, operator retries included."
    )
    stage: str | None
    progress: float
    last_heartbeat_at: datetime | None
    processing_started_at: datetime | None
    processing_completed_at: datetime | None
    completed_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    lease: int = Field(description="Fencing token of the current claim.")
    cancel_requested: bool = Field(description="A cancel of this RUNNING job is pending.")
    trace_context: str | None = Field(
        default=None,
        description="W3C traceparent of the request that enqueued it, when tracing was on: "
        "its trace holds the job's claim, stages and completion.",
    )
    audit_trail: list[AuditEntry] = Field(
        default_factory=list,
        description="Who enqueued, cancelled, retried or released the job, oldest first "
        "(the one-job view only; empty in lists).",
    )


class JobResponse(BaseModel):
    job: Job


class JobActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    action: Literal["cancel", "retry"] = Field(
        description=(
            "cancel: QUEUED or RETRY jobs are CANCELLED at once; a RUNNING job is cancelled "
            "when its worker next heartbeats. retry: FAILED or CANCELLED jobs go back to QUEUED."
        )
    )


class JobActionResponse(BaseModel):
    success: bool
    message: str
    job: Job


class StatusCounts(BaseModel):
    QUEUED: int
    RUNNING: int
    SUCCEEDED: int
    RETRY: int
    FAILED: int
    CANCELLED: int


class Stats(BaseModel):
    by_status: StatusCounts
    total: int


class JobListResponse(BaseModel):
    jobs: list[Job] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
    stats: Stats | None = Field(default=None, description="Present only with stats=true.")


class Summary(BaseModel):
    running: int
    pending: int = Field(description="QUEUED + RETRY.")
    failed: int = Field(description="FAILED: the dead letter.")
    has_dead_letter: bool
    stale_running: int = Field(description="RUNNING jobs whose heartbeat is overdue.")
    oldest_runnable_age_seconds: float = Field(
        description="How long the oldest runnable (QUEUED, or RETRY past run_after) job waited."
    )


class StatsResponse(BaseModel):
    stats: Stats
    health: Health
    summary: Summary


class RunningJob(BaseModel):
    job: Job
    running_seconds: float = Field(description="Since the current claim started.")
    heartbeat_age_seconds: float = Field(
        description="Since the last heartbeat (or the claim, before the first heartbeat)."
    )


class RunningJobsResponse(BaseModel):
    jobs: list[RunningJob] = Field(description="RUNNING jobs, the earliest claimed first.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )


class Keyframe(BaseModel):
    timestamp_seconds: float
    uri: str = Field(description="Where the frame is stored (s3://bucket/key or a local path).")
    width: int
    height: int


class AdvertChunk(BaseModel):
    """A searchable piece of the advert. The vector itself is left out (it is large and of no
    use on a page); `embedding_dimension` says how long it is, 0 when none was made."""

    index: int
    kind: str = Field(description="transcript, analysis, ...")
    text: str
    embedding_model: str | None
    embedding_dimension: int


class Advert(BaseModel):
    """What the pipeline made of one TV advert (the `adverts` table)."""

    id: str
    source_key: str = Field(examples=["s3:videos/test-ad.mp4"])
    job_id: str | None = Field(description="The job that stored it last.")
    media: dict[str, Any] | None = Field(description="Probe results: duration, size, codecs...")
    transcript: str | None
    analysis: dict[str, Any] | None = Field(
        description="brand, product, category, tone, claims, call_to_action, ..."
    )
    keyframes: list[Keyframe]
    chunks: list[AdvertChunk]
    provenance: dict[str, Any] | None = Field(
        description="Providers used per stage, and what was skipped and why."
    )
    created_at: datetime | None
    updated_at: datetime | None


class AdvertResponse(BaseModel):
    advert: Advert


class HealthzResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    queue_service: str = Field(description="SERVING, NOT_SERVING, UNKNOWN or UNREACHABLE.")
