"""AdvertSink over a synchronous gRPC channel to the queue service's AdvertService.

The stages run in a worker thread, so a plain blocking channel is the right tool: no event loop
to share. The pipeline factory opens it (the stages persist through it, the worker never does);
the lease each call carries fences off a stage that outlives its job's ownership. Errors are
classified here, once:

- ABORTED (the job's lease is no longer current: released as stale, re-claimed, cancelled or
  finished elsewhere) raises `JobStopped`. The worker then stops the job without completing or
  failing it, exactly as when the heartbeat answer says LEASE_LOST; the current owner's work
  stands and nothing of ours was written.
- UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED: transient (QUEUE_UNAVAILABLE).
- INVALID_ARGUMENT: permanent (ADVERT_INVALID); UNAUTHENTICATED / PERMISSION_DENIED: permanent
  (QUEUE_AUTH_FAILED).
- Anything else: transient (ADVERT_STORE_FAILED), FAILED_PRECONDITION included: ADVERT_HELD
  means another job of the same source still runs and holds the advert; a later attempt,
  after that job ends, may replace it.
"""

from __future__ import annotations

import logging

import grpc

from jobqueue import rpc
from jobqueue.tls import ClientTls
from jobqueue.v1 import advert_service_pb2, advert_service_pb2_grpc
from worker_service.pipeline.errors import JobStopped, PermanentError, TransientError

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_SECONDS = 30.0


class GrpcAdvertSink:
    def __init__(
        self,
        target: str,
        token: str | None,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        *,
        tls: ClientTls | None = None,
    ) -> None:
        self._target = target
        self._deadline = deadline_seconds
        self._metadata = rpc.bearer_metadata(token)
        # The shared channel options allow messages far above gRPC's 4 MB default: chunks carry
        # their vectors, so a long transcript must not fail on size alone.
        self._channel = rpc.open_blocking_channel(target, tls)
        self._stub = advert_service_pb2_grpc.AdvertServiceStub(self._channel)

    def store(self, advert: advert_service_pb2.Advert, job_id: str, lease: int) -> tuple[str, bool]:
        request = advert_service_pb2.StoreAdvertRequest(advert=advert, job_id=job_id, lease=lease)
        try:
            response = self._stub.StoreAdvert(
                request, timeout=self._deadline, metadata=self._metadata
            )
        except grpc.RpcError as error:
            code = rpc.status_code(error)
            if code == grpc.StatusCode.ABORTED:
                log.warning("job %s: lease %d lost while storing its advert", job_id, lease)
                raise JobStopped(job_id) from error
            if code in rpc.RETRYABLE_CODES:
                raise TransientError(
                    "QUEUE_UNAVAILABLE", f"storing the advert at {self._target}: {code.name}"
                ) from error
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise PermanentError(
                    "ADVERT_INVALID", f"advert rejected: {_details(error)}"
                ) from error
            if code in rpc.AUTH_CODES:
                raise PermanentError(
                    "QUEUE_AUTH_FAILED", f"the queue service refused the token ({code.name})"
                ) from error
            raise TransientError(
                "ADVERT_STORE_FAILED", f"storing the advert: {code.name}: {_details(error)}"
            ) from error
        return response.ad_id, response.created

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcAdvertSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _details(error: grpc.RpcError) -> str:
    return (error.details() if isinstance(error, grpc.Call) else str(error)) or ""
