"""S3 (or any S3-compatible store) through boto3.

boto3 reads its own configuration: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE,
AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL for MinIO, moto or another compatible server. We add
only bounded retries and timeouts, so that a slow store becomes a retryable job failure instead
of a job that hangs until its heartbeat times out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from worker_service.pipeline.errors import JobStopped, PermanentError, StageError, TransientError
from worker_service.providers.interfaces import ObjectInfo, ProgressCallback

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1024 * 1024

# S3 error codes that mean the credentials were refused: retrying with the same ones cannot help.
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
}
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}


def classify_s3_error(error: Exception, what: str) -> StageError:
    """Map a boto3/botocore failure to a classified stage error.

    A missing object is transient on purpose: the checklist's Test 3 expects a job for a key that
    does not exist to be retried (RETRY) until max_attempts and then dead-lettered (FAILED), and
    an upload that lands a moment after its job is enqueued then still gets processed.
    """
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _NOT_FOUND_CODES:
            return TransientError("S3_OBJECT_NOT_FOUND", f"{what}: object not found")
        if code == "NoSuchBucket":
            # A configuration problem, not the job's: retrying lets jobs succeed once it is fixed.
            return TransientError("S3_BUCKET_NOT_FOUND", f"{what}: bucket does not exist")
        if code in _AUTH_CODES or status == 403:
            return PermanentError("S3_ACCESS_DENIED", f"{what}: access denied ({code})")
        if code in {"InvalidObjectState"}:
            return PermanentError("S3_OBJECT_ARCHIVED", f"{what}: object is archived ({code})")
        # Throttling (SlowDown, 503), 5xx and anything unexpected: worth another attempt.
        return TransientError("S3_UNAVAILABLE", f"{what}: S3 error {code or status}")
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return PermanentError("S3_NO_CREDENTIALS", f"{what}: no AWS credentials configured")
    if isinstance(error, BotoConnectionError | BotoCoreError | OSError):
        return TransientError("S3_UNAVAILABLE", f"{what}: {type(error).__name__}: {error}")
    return TransientError("S3_UNAVAILABLE", f"{what}: {type(error).__name__}")


def make_s3_client(max_attempts: int = 3, timeout_seconds: float = 60.0) -> S3Client:
    """A client configured from the environment by boto3 itself (incl. AWS_ENDPOINT_URL)."""
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=min(timeout_seconds, 10.0),
        read_timeout=timeout_seconds,
    )
    return boto3.session.Session().client("s3", config=config)


class S3ObjectStore:
    """Downloads source videos and uploads keyframe images. Thread-safe (one boto3 client)."""

    def __init__(self, bucket: str, client: Any | None = None, max_bytes: int | None = None):
        self.bucket = bucket
        self._client = client if client is not None else make_s3_client()
        self._max_bytes = max_bytes

    def download(self, key: str, dest: Path, progress: ProgressCallback) -> ObjectInfo:
        """Stream the object to dest in the calling thread, reporting progress per chunk.

        One GET streamed by us (rather than boto3's threaded transfer manager) keeps progress
        reports and stop checks in the stage's own thread.
        """
        what = f"s3://{self.bucket}/{key}"
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
        except Exception as error:
            raise classify_s3_error(error, what) from error
        size = int(response.get("ContentLength", 0) or 0)
        if self._max_bytes is not None and size > self._max_bytes:
            response["Body"].close()
            raise PermanentError(
                "VIDEO_TOO_LARGE", f"{what} is {size} bytes; the limit is {self._max_bytes}"
            )
        received = 0
        body = response["Body"]
        try:
            with dest.open("wb") as out:
                for chunk in body.iter_chunks(_CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    if size:
                        progress(received / size)
        except (StageError, JobStopped):
            raise
        except Exception as error:
            # A reset or timeout mid-body: transient, the next attempt downloads again.
            raise classify_s3_error(error, what) from error
        finally:
            body.close()
        if size and received != size:
            raise TransientError(
                "S3_INCOMPLETE_DOWNLOAD", f"{what}: got {received} of {size} bytes"
            )
        log.info("downloaded %s (%d bytes)", what, received)
        return ObjectInfo(bucket=self.bucket, key=key, size=received)

    def upload(self, path: Path, key: str, content_type: str) -> str:
        what = f"s3://{self.bucket}/{key}"
        try:
            with path.open("rb") as body:
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
                )
        except Exception as error:
            raise classify_s3_error(error, f"upload {what}") from error
        return what
