"""Fixtures of the pipeline tests: sample media, a local S3 (moto's server), a recording advert
sink, and a migrated PostgreSQL database. The local OpenAI-compatible server (`fake_openai`) is
tests/conftest.py's: tests/e2e uses it too."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from jobqueue.v1 import advert_service_pb2
from tests.pipeline.sample_media import SampleAdvert, make_advert
from tests.support.databases import create_database, drop_database, url_for
from worker_service.pipeline.base import StageContext


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleAdvert:
    return make_advert(tmp_path_factory.mktemp("media"))


# -- S3 ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> str:
    """boto3 pointed at the local S3 through its own environment variables only."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    return moto_endpoint


@pytest.fixture
def s3(aws_env: str) -> Any:
    return boto3.client("s3")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"adverts-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


# -- OpenAI ----------------------------------------------------------------------------------


@pytest.fixture
def no_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


# -- the pipeline's surroundings -------------------------------------------------------------


class RecordingSink:
    """An in-memory AdvertSink: keeps what was stored, keyed like the real one."""

    def __init__(self) -> None:
        self.calls: list[tuple[advert_service_pb2.Advert, str, int]] = []
        self._ids: dict[str, str] = {}

    def store(self, advert: advert_service_pb2.Advert, job_id: str, lease: int) -> tuple[str, bool]:
        self.calls.append((advert, job_id, lease))
        created = advert.source_key not in self._ids
        ad_id = self._ids.setdefault(advert.source_key, str(uuid.uuid4()))
        return ad_id, created


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


def make_context(
    workdir: Path, job_input: dict[str, Any], lease: int = 1
) -> tuple[StageContext, list[float]]:
    """A StageContext whose progress reports are collected in the returned list."""
    reports: list[float] = []
    ctx = StageContext(
        job_id=str(uuid.uuid4()),
        lease=lease,
        input=job_input,
        workdir=workdir,
        report_progress=reports.append,
        stop_event=threading.Event(),
    )
    return ctx, reports


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def advert_database(template_database: str) -> Iterator[str]:
    """A fresh copy of the session's migrated template database, shared by a module's tests.

    (Applying the migrations, and re-applying them, is tests/queue/test_migrations.py's.)
    """
    name = create_database(template=template_database, prefix="pipeline_test")
    try:
        yield url_for(name)
    finally:
        drop_database(name)
