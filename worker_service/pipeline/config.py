"""Pipeline configuration, read from the environment once at worker start-up.

Read through the one configuration reader (`jobqueue.settings.Env`), so that a bad value raises
`ConfigError` naming the variable with the same wording as every other setting, and the worker
stops at start-up with a clear message instead of failing every job later. Secrets are kept but
never rendered: the dataclass repr hides the API key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jobqueue.settings import Env

EMBEDDING_PROVIDERS = ("auto", "openai", "local", "none")


@dataclass(frozen=True)
class PipelineConfig:
    # S3 (boto3 reads AWS_* itself, AWS_ENDPOINT_URL included).
    s3_bucket: str | None = None
    keyframe_prefix: str = "keyframes/"
    # OpenAI: used when the key is set; the client reads OPENAI_BASE_URL itself.
    openai_api_key: str | None = field(default=None, repr=False)
    openai_transcription_model: str = "whisper-1"
    openai_chat_model: str = "gpt-4o-mini"
    openai_embedding_model: str = "text-embedding-3-small"
    openai_max_retries: int = 2
    openai_timeout_seconds: float = 120.0
    llm_max_images: int = 4
    # auto: OpenAI with a key, else the local model when installed, else skipped.
    embedding_provider: str = "auto"
    # Local sources: when set, a local path must resolve inside this folder.
    local_media_root: Path | None = None
    # Local sources: where keyframe images are kept (none kept when unset).
    keyframe_dir: Path | None = None
    max_keyframes: int = 16
    scene_threshold: float = 0.3
    max_video_bytes: int = 2 * 1024**3
    media_timeout_seconds: float = 600.0
    chunk_words: int = 120
    chunk_overlap_words: int = 20

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineConfig:
        read = Env(os.environ if env is None else env)
        prefix = read.text("KEYFRAME_PREFIX", "keyframes/").lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        words = read.whole("CHUNK_WORDS", 120, minimum=10, maximum=2000)
        return cls(
            s3_bucket=read.raw("S3_BUCKET"),
            keyframe_prefix=prefix,
            # Stripped like every other value: a key pasted with a newline would be refused.
            openai_api_key=read.raw("OPENAI_API_KEY"),
            openai_transcription_model=read.text("OPENAI_TRANSCRIPTION_MODEL", "whisper-1"),
            openai_chat_model=read.text("OPENAI_CHAT_MODEL", "gpt-4o-mini"),
            openai_embedding_model=read.text("OPENAI_EMBEDDING_MODEL", "text-embedding-3-small"),
            openai_max_retries=read.whole("OPENAI_MAX_RETRIES", 2, minimum=0, maximum=10),
            openai_timeout_seconds=read.number(
                "OPENAI_TIMEOUT_SECONDS", 120.0, minimum=1.0, maximum=3600.0
            ),
            llm_max_images=read.whole("LLM_MAX_IMAGES", 4, minimum=0, maximum=32),
            embedding_provider=read.choice("EMBEDDING_PROVIDER", "auto", EMBEDDING_PROVIDERS),
            local_media_root=read.directory("LOCAL_MEDIA_ROOT"),
            keyframe_dir=read.directory("KEYFRAME_DIR"),
            max_keyframes=read.whole("MAX_KEYFRAMES", 16, minimum=1, maximum=500),
            scene_threshold=read.number("SCENE_THRESHOLD", 0.3, minimum=0.01, maximum=1.0),
            max_video_bytes=read.whole("MAX_VIDEO_BYTES", 2 * 1024**3, minimum=1, maximum=1024**4),
            media_timeout_seconds=read.number(
                "MEDIA_TIMEOUT_SECONDS", 600.0, minimum=1.0, maximum=86400.0
            ),
            chunk_words=words,
            chunk_overlap_words=read.whole("CHUNK_OVERLAP_WORDS", 20, minimum=0, maximum=words - 1),
        )
