"""The job input: where the video comes from, validated before any work is done.

The rules are the one input schema in `jobqueue.ingest_input`, which the queue service and the
gateway apply before they store a job; here they guard against a job that reached the table
another way (psql, an older service). Anything that breaks them is a permanent INVALID_INPUT: no
retry can make a malformed input valid. On top of them the worker checks what only it can see:
that S3_BUCKET is set for an s3 source, and that a local path still lies inside
LOCAL_MEDIA_ROOT once its symlinks are resolved. `input_check` is the pipeline's validator (the
worker's `validating_input` stage); `fetch_video` parses the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobqueue import ingest_input
from jobqueue.ingest_input import InputError, Source
from worker_service.pipeline.base import InputCheck
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.errors import PermanentError

__all__ = ["Source", "input_check", "parse_source"]


def _invalid(message: str) -> PermanentError:
    return PermanentError("INVALID_INPUT", message)


def input_check(config: PipelineConfig) -> InputCheck:
    """The nine-stage pipeline's validator: `parse_source` under this configuration."""

    def check(job_input: Mapping[str, Any]) -> Source:
        return parse_source(job_input, config)

    return check


def parse_source(job_input: Any, config: PipelineConfig) -> Source:
    root = config.local_media_root
    try:
        source = ingest_input.parse(job_input, root)
    except InputError as error:
        raise _invalid(error.message) from None
    if source.kind == "s3":
        if config.s3_bucket is None:
            raise PermanentError(
                "CONFIG_ERROR", "S3_BUCKET is not set on this worker; it cannot read s3 sources"
            )
        return source
    # Symlinks are followed before the containment check, so a link cannot lead outside.
    resolved = Path(os.path.realpath(source.location))
    if root is not None and not resolved.is_relative_to(os.path.realpath(root)):
        raise _invalid(f"path is outside LOCAL_MEDIA_ROOT: {job_input['path'][:200]!r}")
    return Source("local", str(resolved))
