"""AdvertService: where workers persist what the pipeline made of a video.

Validate → one store call → convert. Errors leave as domain errors and are mapped to status
codes by `grpc_errors` (INVALID_ARGUMENT, NOT_FOUND, ABORTED with reason LEASE_LOST,
FAILED_PRECONDITION with reason ADVERT_HELD, UNAVAILABLE).
"""

from __future__ import annotations

import math

import grpc

from jobqueue.v1 import advert_service_pb2, advert_service_pb2_grpc
from queue_service.advert_store import AdvertStore, parse_uuid
from queue_service.errors import InvalidArgument, grpc_errors

MAX_SOURCE_KEY_CHARS = 4096
MAX_CHUNKS = 10_000
MAX_KEYFRAMES = 1_000


def validate_store_request(request: advert_service_pb2.StoreAdvertRequest) -> None:
    if not request.HasField("advert"):
        raise InvalidArgument("advert is required", field="advert")
    advert = request.advert
    key = advert.source_key
    if not key or len(key) > MAX_SOURCE_KEY_CHARS or "\x00" in key:
        raise InvalidArgument(
            f"advert.source_key must be 1..{MAX_SOURCE_KEY_CHARS} characters without NUL",
            field="advert.source_key",
        )
    # Every write is under a lease: the job that made the advert, and its current lease.
    if not request.job_id:
        raise InvalidArgument(
            "job_id is required: an advert is stored under its job's lease", field="job_id"
        )
    job = parse_uuid(request.job_id, "job_id")
    if request.lease < 1:
        raise InvalidArgument("lease is required: the job's current lease", field="lease")
    if advert.job_id and parse_uuid(advert.job_id, "advert.job_id") != job:
        raise InvalidArgument("advert.job_id must be empty or equal job_id", field="advert.job_id")
    if len(advert.chunks) > MAX_CHUNKS or len(advert.keyframes) > MAX_KEYFRAMES:
        raise InvalidArgument(
            f"at most {MAX_CHUNKS} chunks and {MAX_KEYFRAMES} keyframes", field="advert"
        )
    seen: set[int] = set()
    for chunk in advert.chunks:
        if chunk.index in seen or chunk.index < 0:
            raise InvalidArgument(
                f"chunk index {chunk.index} is negative or repeated", field="advert.chunks"
            )
        seen.add(chunk.index)
        if chunk.embedding and not chunk.embedding_model:
            raise InvalidArgument(
                f"chunk {chunk.index} has an embedding without embedding_model",
                field="advert.chunks",
            )
        if not all(math.isfinite(x) for x in chunk.embedding):
            raise InvalidArgument(
                f"chunk {chunk.index} has a non-finite embedding value", field="advert.chunks"
            )
    for frame in advert.keyframes:
        if not (math.isfinite(frame.timestamp_seconds) and frame.timestamp_seconds >= 0):
            raise InvalidArgument("keyframe timestamps must be >= 0", field="advert.keyframes")


class AdvertServicer(advert_service_pb2_grpc.AdvertServiceServicer):
    def __init__(self, store: AdvertStore) -> None:
        self._store = store

    @grpc_errors
    async def StoreAdvert(
        self, request: advert_service_pb2.StoreAdvertRequest, context: grpc.aio.ServicerContext
    ) -> advert_service_pb2.StoreAdvertResponse:
        validate_store_request(request)
        ad_id, created = await self._store.store_advert(
            request.advert, request.job_id, request.lease
        )
        return advert_service_pb2.StoreAdvertResponse(ad_id=ad_id, created=created)

    @grpc_errors
    async def GetAdvert(
        self, request: advert_service_pb2.GetAdvertRequest, context: grpc.aio.ServicerContext
    ) -> advert_service_pb2.Advert:
        if not request.ad_id:
            raise InvalidArgument("ad_id is required", field="ad_id")
        return await self._store.get_advert(request.ad_id)
