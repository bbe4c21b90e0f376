import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from jobqueue.v1 import job_pb2 as _job_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeartbeatAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEARTBEAT_ACTION_UNSPECIFIED: _ClassVar[HeartbeatAction]
    HEARTBEAT_ACTION_CONTINUE: _ClassVar[HeartbeatAction]
    HEARTBEAT_ACTION_CANCEL: _ClassVar[HeartbeatAction]
    HEARTBEAT_ACTION_LEASE_LOST: _ClassVar[HeartbeatAction]
    HEARTBEAT_ACTION_INVALID: _ClassVar[HeartbeatAction]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_OK: _ClassVar[Outcome]
    OUTCOME_LEASE_LOST: _ClassVar[Outcome]
    OUTCOME_NOT_FOUND: _ClassVar[Outcome]
    OUTCOME_LOCKED: _ClassVar[Outcome]
HEARTBEAT_ACTION_UNSPECIFIED: HeartbeatAction
HEARTBEAT_ACTION_CONTINUE: HeartbeatAction
HEARTBEAT_ACTION_CANCEL: HeartbeatAction
HEARTBEAT_ACTION_LEASE_LOST: HeartbeatAction
HEARTBEAT_ACTION_INVALID: HeartbeatAction
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_OK: Outcome
OUTCOME_LEASE_LOST: Outcome
OUTCOME_NOT_FOUND: Outcome
OUTCOME_LOCKED: Outcome

class ClaimRequest(_message.Message):
    __slots__ = ("worker_id", "max_jobs", "wait", "queue")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    max_jobs: int
    wait: _duration_pb2.Duration
    queue: str
    def __init__(self, worker_id: _Optional[str] = ..., max_jobs: _Optional[int] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., queue: _Optional[str] = ...) -> None: ...

class ClaimResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_job_pb2.Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[_job_pb2.Job, _Mapping]]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("job_id", "lease", "stage", "progress", "beats")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BEATS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease: int
    stage: str
    progress: float
    beats: _containers.RepeatedCompositeFieldContainer[JobBeat]
    def __init__(self, job_id: _Optional[str] = ..., lease: _Optional[int] = ..., stage: _Optional[str] = ..., progress: _Optional[float] = ..., beats: _Optional[_Iterable[_Union[JobBeat, _Mapping]]] = ...) -> None: ...

class JobBeat(_message.Message):
    __slots__ = ("job_id", "lease", "stage", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease: int
    stage: str
    progress: float
    def __init__(self, job_id: _Optional[str] = ..., lease: _Optional[int] = ..., stage: _Optional[str] = ..., progress: _Optional[float] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("job_id", "lease", "action", "message", "beats")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BEATS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease: int
    action: HeartbeatAction
    message: str
    beats: _containers.RepeatedCompositeFieldContainer[JobBeatAnswer]
    def __init__(self, job_id: _Optional[str] = ..., lease: _Optional[int] = ..., action: _Optional[_Union[HeartbeatAction, str]] = ..., message: _Optional[str] = ..., beats: _Optional[_Iterable[_Union[JobBeatAnswer, _Mapping]]] = ...) -> None: ...

class JobBeatAnswer(_message.Message):
    __slots__ = ("job_id", "lease", "action", "message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease: int
    action: HeartbeatAction
    message: str
    def __init__(self, job_id: _Optional[str] = ..., lease: _Optional[int] = ..., action: _Optional[_Union[HeartbeatAction, str]] = ..., message: _Optional[str] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("job_id", "lease", "output")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease: int
    output: _struct_pb2.Struct
    def __init__(self, job_id: _Optional[str] = ..., lease: _Optional[int] = ..., output: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class EntryResult(_message.Message):
    __slots__ = ("job_id", "outcome", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    outcome: Outcome
    status: _job_pb2.JobStatus
    def __init__(self, job_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., status: _Optional[_Union[_job_pb2.JobStatus, str]] = ...) -> None: ...

class CompleteBatchRequest(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[CompleteRequest]
    def __init__(self, entries: _Optional[_Iterable[_Union[CompleteRequest, _Mapping]]] = ...) -> None: ...

class CompleteBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EntryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EntryResult, _Mapping]]] = ...) -> None: ...

class FailRequest(_message.Message):
    __slots__ = ("job_id", "lease", "error_code", "message", "retryable", "retry_after")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease: int
    error_code: str
    message: str
    retryable: bool
    retry_after: _duration_pb2.Duration
    def __init__(self, job_id: _Optional[str] = ..., lease: _Optional[int] = ..., error_code: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class FailResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class FailBatchRequest(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[FailRequest]
    def __init__(self, entries: _Optional[_Iterable[_Union[FailRequest, _Mapping]]] = ...) -> None: ...

class FailBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EntryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EntryResult, _Mapping]]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("job_id", "lease", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    lease: int
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., lease: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...
