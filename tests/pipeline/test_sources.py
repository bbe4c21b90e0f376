"""Job input validation: malformed input is a permanent INVALID_INPUT, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobqueue.settings import ConfigError
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.errors import PermanentError
from worker_service.pipeline.sources import input_check, parse_source

S3 = PipelineConfig(s3_bucket="adverts")


def test_s3_source_key() -> None:
    source = parse_source({"source_type": "s3", "s3_key": "videos/test-ad.mp4"}, S3)
    assert source.source_key == "s3:videos/test-ad.mp4"
    assert source.suffix == ".mp4"


@pytest.mark.parametrize(
    "job_input",
    [
        {"source_type": "s3"},
        {"source_type": "s3", "s3_key": ""},
        {"source_type": "s3", "s3_key": "   "},
        {"source_type": "s3", "s3_key": 42},
        {"source_type": "s3", "s3_key": "../secrets/x.mp4"},
        {"source_type": "s3", "s3_key": "videos/../../x.mp4"},
        {"source_type": "s3", "s3_key": "/videos/x.mp4"},
        {"source_type": "ftp", "s3_key": "videos/x.mp4"},
        {"source_type": "local"},
        {"source_type": "local", "path": "/media/../etc/passwd"},
        {"source_type": "local", "path": "relative/x.mp4"},
        # The REST API and the checklist always name the source type; it is never guessed.
        {"s3_key": "videos/x.mp4"},
        {},
    ],
)
def test_invalid_input_is_permanent(job_input: dict[str, object]) -> None:
    with pytest.raises(PermanentError) as raised:
        parse_source(job_input, S3)
    assert raised.value.code == "INVALID_INPUT"
    assert raised.value.retryable is False


def test_the_pipeline_checks_input_with_the_same_rules() -> None:
    check = input_check(S3)
    assert check({"source_type": "s3", "s3_key": "videos/x.mp4"}) == parse_source(
        {"source_type": "s3", "s3_key": "videos/x.mp4"}, S3
    )
    with pytest.raises(PermanentError, match="source_type s3 needs an s3_key"):
        check({"source_type": "s3", "s3_key": "  "})
    with pytest.raises(PermanentError, match="source_type local needs a path"):
        check({"source_type": "local", "path": 3})
    with pytest.raises(PermanentError, match="source_type must be 's3' or 'local', got None"):
        check({"s3_key": "videos/x.mp4"})


def test_input_that_is_not_an_object() -> None:
    with pytest.raises(PermanentError, match="JSON object"):
        parse_source(["videos/x.mp4"], S3)


def test_s3_source_without_a_bucket_is_a_config_error() -> None:
    with pytest.raises(PermanentError) as raised:
        parse_source({"source_type": "s3", "s3_key": "videos/x.mp4"}, PipelineConfig())
    assert raised.value.code == "CONFIG_ERROR"
    assert "S3_BUCKET" in raised.value.message


def test_local_root_contains_relative_paths_and_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (root / "ad.mp4").write_bytes(b"x")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"x")
    (root / "link.mp4").symlink_to(outside)
    config = PipelineConfig(local_media_root=root)

    source = parse_source({"source_type": "local", "path": "ad.mp4"}, config)
    assert source.source_key == f"local:{root / 'ad.mp4'}"
    with pytest.raises(PermanentError, match="outside LOCAL_MEDIA_ROOT"):
        parse_source({"source_type": "local", "path": "link.mp4"}, config)
    with pytest.raises(PermanentError, match="outside LOCAL_MEDIA_ROOT"):
        parse_source({"source_type": "local", "path": str(outside)}, config)


def test_config_rejects_bad_values_by_name() -> None:
    with pytest.raises(ValueError, match="MAX_KEYFRAMES"):
        PipelineConfig.from_env({"MAX_KEYFRAMES": "lots"})
    with pytest.raises(ValueError, match="EMBEDDING_PROVIDER"):
        PipelineConfig.from_env({"EMBEDDING_PROVIDER": "magic"})
    with pytest.raises(ValueError, match="KEYFRAME_DIR"):
        PipelineConfig.from_env({"KEYFRAME_DIR": "relative/dir"})


def test_config_never_shows_the_api_key() -> None:
    config = PipelineConfig.from_env({"OPENAI_API_KEY": "sk-secret-value"})
    assert config.openai_api_key == "sk-secret-value"
    assert "sk-secret-value" not in repr(config)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCENE_THRESHOLD": "nan"}, "SCENE_THRESHOLD must be a finite number, got 'nan'"),
        ({"OPENAI_TIMEOUT_SECONDS": "inf"}, "OPENAI_TIMEOUT_SECONDS must be a finite number"),
        ({"MAX_KEYFRAMES": "0"}, "MAX_KEYFRAMES must be at least 1, got '0'"),
        ({"CHUNK_WORDS": "50", "CHUNK_OVERLAP_WORDS": "50"}, "must be at most 49, got '50'"),
    ],
)
def test_config_numbers_are_read_by_the_shared_reader(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        PipelineConfig.from_env(env)
    assert message in str(raised.value)
