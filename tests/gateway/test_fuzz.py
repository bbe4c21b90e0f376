"""Schema-driven fuzzing of the running gateway (schemathesis, from its own /openapi.json):
generated valid and invalid requests, and stateful sequences that follow the API's links
(enqueue -> get -> cancel/retry). No request may get a 5xx, and every response must match the
schema the document declares for its status. No route creates an advert, so the run is given one
(stored as the pipeline stores it) for GET /api/ingest/adverts/{ad_id}: random ids only ever
reach the 404."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from jobqueue.v1 import advert_service_pb2, advert_service_pb2_grpc
from tests.gateway.conftest import ADMIN_KEY, Stack
from tests.support.jobs import insert_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
# Per operation and phase; bounds the run to well under a minute on two cores.
MAX_EXAMPLES = 25


def stored_advert(stack: Stack) -> str:
    assert stack.queue is not None
    advert = advert_service_pb2.Advert(source_key="s3:videos/fuzzed.mp4", transcript="Hello.")
    advert.media.update({"duration_seconds": 8})
    with grpc.insecure_channel(f"127.0.0.1:{stack.queue.port}") as channel:
        stub = advert_service_pb2_grpc.AdvertServiceStub(channel)
        # Every store is under a RUNNING job's lease.
        job = insert_job(stack.db, status="RUNNING")
        request = advert_service_pb2.StoreAdvertRequest(
            advert=advert, job_id=str(job["id"]), lease=job["lease"]
        )
        return stub.StoreAdvert(request).ad_id


def test_fuzzing_finds_no_server_error(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "schemathesis.toml").write_text(
        "[[operations]]\n"
        'include-path = "/api/ingest/adverts/{ad_id}"\n'
        f'parameters = {{ "path.ad_id" = "{stored_advert(stack)}" }}\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{stack.base_url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--header",
            f"X-Admin-Key: {ADMIN_KEY}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
        ],
        # Schemathesis reads its config file (above) and writes reports in its working directory.
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    # The output names each failing request with a curl line and the seed to replay the run.
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout
    # The fuzzer created jobs through the API: the queue service saw real traffic.
    assert stack.job_count() > 0
