"""fetch_video against a local S3-compatible server (moto) through the real boto3 client,
configured only by boto3's own AWS_* variables (AWS_ENDPOINT_URL included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.conftest import make_context
from tests.pipeline.sample_media import SampleAdvert
from tests.support.processes import free_port
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.errors import PermanentError, TransientError
from worker_service.pipeline.fetch import FetchVideo
from worker_service.providers.s3 import S3ObjectStore, make_s3_client

pytestmark = pytest.mark.integration


def _fetch(bucket: str, key: str, workdir: Path, **config: Any) -> Any:
    cfg = PipelineConfig(s3_bucket=bucket, **config)
    store = S3ObjectStore(bucket, max_bytes=cfg.max_video_bytes)
    ctx, reports = make_context(workdir, {"source_type": "s3", "s3_key": key})
    FetchVideo(cfg, store).run(ctx)
    return ctx, reports


def test_downloads_the_object_with_progress(
    s3: Any, bucket: str, sample: SampleAdvert, tmp_path: Path
) -> None:
    s3.upload_file(str(sample.path), bucket, "videos/test-ad.mp4")
    ctx, reports = _fetch(bucket, "videos/test-ad.mp4", tmp_path)
    path: Path = ctx.state["video_path"]
    assert path.read_bytes() == sample.path.read_bytes()
    assert path.parent == tmp_path
    assert ctx.output["source_key"] == "s3:videos/test-ad.mp4"
    assert ctx.state["provenance"]["providers"]["fetch_video"] == f"s3:{bucket}"
    assert reports and reports[-1] == 1.0


def test_missing_object_is_transient(bucket: str, tmp_path: Path) -> None:
    # The checklist's Test 3: RETRY, and FAILED only once the attempts are used up.
    with pytest.raises(TransientError) as raised:
        _fetch(bucket, "nonexistent/fake-video.mp4", tmp_path)
    assert raised.value.code == "S3_OBJECT_NOT_FOUND"
    assert raised.value.retryable


def test_missing_bucket_is_transient(aws_env: str, tmp_path: Path) -> None:
    with pytest.raises(TransientError) as raised:
        _fetch("no-such-bucket-here", "videos/x.mp4", tmp_path)
    assert raised.value.code == "S3_BUCKET_NOT_FOUND"


def test_object_over_the_size_limit_is_permanent(
    s3: Any, bucket: str, sample: SampleAdvert, tmp_path: Path
) -> None:
    s3.upload_file(str(sample.path), bucket, "videos/big.mp4")
    with pytest.raises(PermanentError) as raised:
        _fetch(bucket, "videos/big.mp4", tmp_path, max_video_bytes=1000)
    assert raised.value.code == "VIDEO_TOO_LARGE"


def test_unreachable_store_is_transient(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = free_port()
    # Nothing listens on that port now: connection refused, fast.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    store = S3ObjectStore("adverts", client=make_s3_client(max_attempts=1))
    ctx, _ = make_context(tmp_path, {"source_type": "s3", "s3_key": "v.mp4"})
    with pytest.raises(TransientError) as raised:
        FetchVideo(PipelineConfig(s3_bucket="adverts"), store).run(ctx)
    assert raised.value.code == "S3_UNAVAILABLE"


def test_refused_credentials_are_permanent(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # moto accepts any key by default; a bucket policy denying everyone makes it refuse.
    s3.put_bucket_policy(
        Bucket=bucket,
        Policy=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*",'
            f'"Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/*"}}]}}'
        ),
    )
    with pytest.raises(PermanentError) as raised:
        _fetch(bucket, "videos/x.mp4", tmp_path)
    assert raised.value.code == "S3_ACCESS_DENIED"


def test_missing_local_file_is_transient(tmp_path: Path) -> None:
    ctx, _ = make_context(tmp_path, {"source_type": "local", "path": str(tmp_path / "gone.mp4")})
    with pytest.raises(TransientError) as raised:
        FetchVideo(PipelineConfig(), None).run(ctx)
    assert raised.value.code == "LOCAL_FILE_NOT_FOUND"
