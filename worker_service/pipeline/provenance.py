"""What each stage used, and what it skipped and why: kept in ctx.state["provenance"].

It is stored with the advert and copied into the job output, so a reader of either can tell a
record made with OpenAI from one made offline, and an empty transcript that means "silent
advert" from one that means "no transcription provider".
"""

from __future__ import annotations

import logging
from typing import Any

from worker_service.pipeline.base import StageContext

log = logging.getLogger(__name__)


def provenance(ctx: StageContext) -> dict[str, Any]:
    return ctx.state.setdefault("provenance", {"providers": {}, "skipped": {}, "notes": {}})


def used(ctx: StageContext, stage: str, provider: str) -> None:
    provenance(ctx)["providers"][stage] = provider


def skipped(ctx: StageContext, stage: str, reason: str) -> None:
    log.info("job %s: %s skipped: %s", ctx.job_id, stage, reason)
    provenance(ctx)["skipped"][stage] = reason


def note(ctx: StageContext, stage: str, text: str) -> None:
    provenance(ctx)["notes"][stage] = text
