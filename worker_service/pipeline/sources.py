"""The job input: where the video comes from, validated before any work is done.

Two kinds of source: {"source_type": "s3", "s3_key": "videos/ad.mp4"} (read from S3_BUCKET) and
{"source_type": "local", "path": "/media/ad.mp4"} for users without object storage. Anything
else is a permanent INVALID_INPUT: no retry can make a malformed input valid.

`source_type` is required, as the REST API's enqueue schema and the checklist write it: an input
with an `s3_key` but no `source_type` is refused rather than guessed at. `input_check` is the
pipeline's validator (the worker's `validating_input` stage); `fetch_video` parses the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from worker_service.pipeline.base import InputCheck
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.errors import PermanentError

_MAX_KEY_BYTES = 1024  # S3's own limit on key length


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


def _invalid(message: str) -> PermanentError:
    return PermanentError("INVALID_INPUT", message)


def input_check(config: PipelineConfig) -> InputCheck:
    """The nine-stage pipeline's validator: `parse_source` under this configuration."""

    def check(job_input: Mapping[str, Any]) -> Source:
        return parse_source(job_input, config)

    return check


def parse_source(job_input: Any, config: PipelineConfig) -> Source:
    if not isinstance(job_input, Mapping):
        raise _invalid("the job input must be a JSON object")
    source_type = job_input.get("source_type")
    if source_type == "s3":
        return _s3_source(job_input.get("s3_key"), config)
    if source_type == "local":
        return _local_source(job_input.get("path"), config)
    raise _invalid(f"source_type must be 's3' or 'local', got {source_type!r}")


def _s3_source(key: Any, config: PipelineConfig) -> Source:
    if not isinstance(key, str) or not key.strip():
        raise _invalid("source_type s3 needs an s3_key")
    if key != key.strip() or "\x00" in key or len(key.encode()) > _MAX_KEY_BYTES:
        raise _invalid("s3_key has surrounding white space, a NUL byte, or is too long")
    if key.startswith("/") or ".." in PurePosixPath(key).parts:
        # S3 itself would accept these, but a key that climbs out of its prefix is far more
        # likely an attempt to reach something else than a real upload.
        raise _invalid(f"s3_key must be a relative key without '..' segments: {key!r}")
    if config.s3_bucket is None:
        raise PermanentError(
            "CONFIG_ERROR", "S3_BUCKET is not set on this worker; it cannot read s3 sources"
        )
    return Source("s3", key)


def _local_source(raw: Any, config: PipelineConfig) -> Source:
    if not isinstance(raw, str) or not raw.strip():
        raise _invalid("source_type local needs a path")
    if "\x00" in raw:
        raise _invalid("path contains a NUL byte")
    path = Path(raw)
    if ".." in path.parts:
        raise _invalid(f"path must not contain '..' segments: {raw!r}")
    root = config.local_media_root
    if not path.is_absolute():
        if root is None:
            raise _invalid(f"path must be absolute (LOCAL_MEDIA_ROOT is not set): {raw!r}")
        path = root / path
    # Symlinks are followed before the containment check, so a link cannot lead outside.
    resolved = Path(os.path.realpath(path))
    if root is not None:
        real_root = Path(os.path.realpath(root))
        if not resolved.is_relative_to(real_root):
            raise _invalid(f"path is outside LOCAL_MEDIA_ROOT: {raw!r}")
    return Source("local", str(resolved))
