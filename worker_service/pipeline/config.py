"""Pipeline configuration, read from the environment once at worker start-up.

A bad value raises `ValueError` naming the variable, so the worker stops at start-up with a
clear message instead of failing every job later. Secrets are kept but never rendered: the
dataclass repr hides the API key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _float(
    env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _dir(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise ValueError(f"{name} must be an absolute path, got {raw!r}")
    return path


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
        env = os.environ if env is None else env
        provider = env.get("EMBEDDING_PROVIDER", "auto").strip().lower() or "auto"
        if provider not in EMBEDDING_PROVIDERS:
            raise ValueError(
                f"EMBEDDING_PROVIDER must be one of {', '.join(EMBEDDING_PROVIDERS)}, "
                f"got {provider!r}"
            )
        prefix = env.get("KEYFRAME_PREFIX", "keyframes/").strip().lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        words = _int(env, "CHUNK_WORDS", 120, 10, 2000)
        return cls(
            s3_bucket=env.get("S3_BUCKET", "").strip() or None,
            keyframe_prefix=prefix,
            openai_api_key=env.get("OPENAI_API_KEY", "").strip() or None,
            openai_transcription_model=env.get("OPENAI_TRANSCRIPTION_MODEL", "").strip()
            or "whisper-1",
            openai_chat_model=env.get("OPENAI_CHAT_MODEL", "").strip() or "gpt-4o-mini",
            openai_embedding_model=env.get("OPENAI_EMBEDDING_MODEL", "").strip()
            or "text-embedding-3-small",
            openai_max_retries=_int(env, "OPENAI_MAX_RETRIES", 2, 0, 10),
            openai_timeout_seconds=_float(env, "OPENAI_TIMEOUT_SECONDS", 120.0, 1.0, 3600.0),
            llm_max_images=_int(env, "LLM_MAX_IMAGES", 4, 0, 32),
            embedding_provider=provider,
            local_media_root=_dir(env, "LOCAL_MEDIA_ROOT"),
            keyframe_dir=_dir(env, "KEYFRAME_DIR"),
            max_keyframes=_int(env, "MAX_KEYFRAMES", 16, 1, 500),
            scene_threshold=_float(env, "SCENE_THRESHOLD", 0.3, 0.01, 1.0),
            max_video_bytes=_int(env, "MAX_VIDEO_BYTES", 2 * 1024**3, 1, 1024**4),
            media_timeout_seconds=_float(env, "MEDIA_TIMEOUT_SECONDS", 600.0, 1.0, 86400.0),
            chunk_words=words,
            chunk_overlap_words=_int(env, "CHUNK_OVERLAP_WORDS", 20, 0, words - 1),
        )
