"""Stage 1, fetch_video: validate the input and get the video onto local disk."""

from __future__ import annotations

import logging
from pathlib import Path

from worker_service.pipeline import provenance
from worker_service.pipeline.base import StageContext
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.errors import PermanentError, TransientError
from worker_service.pipeline.sources import parse_source
from worker_service.providers.interfaces import ObjectStore

log = logging.getLogger(__name__)


class FetchVideo:
    name = "fetch_video"

    def __init__(self, config: PipelineConfig, store: ObjectStore | None) -> None:
        self._config = config
        self._store = store

    def run(self, ctx: StageContext) -> None:
        source = parse_source(ctx.input, self._config)
        ctx.state["source"] = source
        ctx.output["source_key"] = source.source_key
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        if source.kind == "s3":
            if self._store is None:
                raise PermanentError("CONFIG_ERROR", "no object store is configured (S3_BUCKET)")
            dest = ctx.workdir / f"source{source.suffix or '.bin'}"
            info = self._store.download(source.location, dest, ctx.progress)
            provenance.used(ctx, self.name, f"s3:{self._store.bucket}")
            ctx.state["video_path"] = dest
            ctx.state["video_bytes"] = info.size
            return
        # A local file is read where it is: copying it would only cost time and disk.
        path = Path(source.location)
        if not path.exists():
            # Transient like a missing S3 object: the file may still be on its way (a copy or a
            # mount in progress), and another worker host may have it.
            raise TransientError("LOCAL_FILE_NOT_FOUND", f"no such file: {path}")
        if not path.is_file():
            raise PermanentError("INVALID_INPUT", f"not a regular file: {path}")
        size = path.stat().st_size
        if size > self._config.max_video_bytes:
            raise PermanentError(
                "VIDEO_TOO_LARGE",
                f"{path} is {size} bytes; the limit is {self._config.max_video_bytes}",
            )
        provenance.used(ctx, self.name, "local")
        ctx.state["video_path"] = path
        ctx.state["video_bytes"] = size
        ctx.progress(1.0)
