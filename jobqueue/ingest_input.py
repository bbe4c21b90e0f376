"""The one schema of an ingestion job's input: where the advert's video comes from.

    {"source_type": "s3", "s3_key": "videos/ad.mp4"}      read from S3_BUCKET
    {"source_type": "local", "path": "/media/ad.mp4"}     a file on the worker host

Three places check an input, all with these rules: the queue service, before it stores a job
(EnqueueJob, EnqueueJobs: INVALID_ARGUMENT), the gateway's REST models (400, before the call),
and the pipeline's `validating_input` stage (a permanent INVALID_INPUT, for a job that reached
the table another way, such as psql). A job the queue service accepted is one the pipeline can
start on.

- `source_type` is required and is `s3` or `local`; it is never guessed from the other keys.
- `s3_key`: 1..1024 bytes of UTF-8 (S3's limit), relative to the bucket (no leading `/`), no `..`
  segment (a key that climbs out of its prefix is far more likely an attempt to reach something
  else than a real upload).
- `path`: 1..4096 bytes, no `..` segment. With LOCAL_MEDIA_ROOT set (the queue service and the
  worker read the same variable; unset by default), an absolute path must lie inside it and a
  relative one is taken inside it; unset, a path must be absolute. The worker also resolves
  symlinks before it checks containment: only it sees the files.
- Text values hold no control characters, no lone surrogates and no surrounding white space.

Other keys are allowed and kept (custom pipelines add their own); the REST API accepts only
these fields. Non-finite numbers cannot reach here from a client: JSON has none, and the queue
service refuses a Struct that carries one before it looks at the input.

Pure functions, no I/O: the gateway, the queue service and the worker import this module, and
none of them imports another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from typing import Any, Literal

from jobqueue.limits import CONTROL_CHARACTERS

SOURCE_TYPES = ("s3", "local")
# S3's own limit on a key.
MAX_S3_KEY_BYTES = 1024
MAX_PATH_BYTES = 4096


class InputError(ValueError):
    """The input breaks a rule. `field` names the input key at fault ("" for the whole input);
    the message says what is wrong without echoing more than a short piece of the value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Source:
    kind: Literal["s3", "local"]
    # The S3 key, or the absolute local path.
    location: str

    @property
    def source_key(self) -> str:
        """The advert's idempotency key: the same source always updates the same advert."""
        return f"{self.kind}:{self.location}"

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.location).suffix.lower()[:10]


def parse(job_input: Any, local_media_root: PurePath | None) -> Source:
    """The input's source, or InputError. A local source's location is the absolute path, taken
    inside `local_media_root` when relative (lexically: symlinks are the worker's to resolve)."""
    if not isinstance(job_input, Mapping):
        raise InputError("", "the job input must be a JSON object")
    source_type = job_input.get("source_type")
    if source_type == "s3":
        return Source("s3", s3_key(job_input.get("s3_key")))
    if source_type == "local":
        path = local_path(job_input.get("path"))
        return Source("local", str(confine(path, local_media_root)))
    shown = source_type if not isinstance(source_type, str) else source_type[:40]
    raise InputError("source_type", f"source_type must be 's3' or 'local', got {shown!r}")


def s3_key(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError("s3_key", "source_type s3 needs an s3_key")
    _text("s3_key", value, MAX_S3_KEY_BYTES)
    if value.startswith("/"):
        raise InputError(
            "s3_key", "s3_key must not start with '/' (keys are relative to the bucket)"
        )
    if ".." in value.split("/"):
        raise InputError("s3_key", "s3_key must not contain '..' segments")
    return value


def local_path(value: Any) -> str:
    """The rules of a local path that hold wherever it is checked (no root needed)."""
    if not isinstance(value, str) or not value.strip():
        raise InputError("path", "source_type local needs a path")
    _text("path", value, MAX_PATH_BYTES)
    if ".." in value.split("/"):
        raise InputError("path", "path must not contain '..' segments")
    return value


def confine(path: str, root: PurePath | None) -> PurePosixPath:
    """The absolute path `path` names under LOCAL_MEDIA_ROOT (`root`), or InputError."""
    pure = PurePosixPath(path)
    if not pure.is_absolute():
        if root is None:
            raise InputError("path", "path must be absolute (LOCAL_MEDIA_ROOT is not set)")
        return PurePosixPath(root) / pure
    if root is not None and not pure.is_relative_to(PurePosixPath(root)):
        raise InputError("path", "path is outside LOCAL_MEDIA_ROOT")
    return pure


def storable_text(value: str) -> str:
    """Refuse what cannot be stored or is surely a mistake; never rewrite the value. Raises
    ValueError with the problem (the caller names the field)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    return value


def _text(field: str, value: str, max_bytes: int) -> None:
    try:
        storable_text(value)
    except ValueError as error:
        raise InputError(field, f"{field} {error}") from None
    if len(value.encode("utf-8")) > max_bytes:
        raise InputError(field, f"{field} must be at most {max_bytes} bytes")
