"""One input schema: the queue service, the gateway and the pipeline judge every job input alike.

Each input below goes through all three checks as they run in their processes (the queue
service's request check, the gateway's REST model, the pipeline's `validating_input`), with the
same LOCAL_MEDIA_ROOT; they must agree on accept or refuse, and name the same field. The REST
API carries only the schema's own keys, so inputs with other keys are judged by the other two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2
from pydantic import TypeAdapter, ValidationError

from gateway.errors import validation_message
from gateway.schemas import EnqueueRequest
from jobqueue import ingest_input
from jobqueue.ingest_input import InputError
from jobqueue.v1 import admin_service_pb2 as admin_pb
from queue_service import admin
from queue_service.errors import InvalidArgument
from worker_service.pipeline.config import PipelineConfig
from worker_service.pipeline.errors import PermanentError
from worker_service.pipeline.sources import parse_source

ROOT = Path("/srv/media")
REST = TypeAdapter(EnqueueRequest)
# Paths that only LOCAL_MEDIA_ROOT refuses.
OUTSIDE = ("/etc/shadow", "/srv/mediax/ad.mp4")

# (input, the input key at fault; None when valid)
CASES: list[tuple[dict[str, Any], str | None]] = [
    ({"source_type": "s3", "s3_key": "videos/ad.mp4"}, None),
    ({"source_type": "s3", "s3_key": "videos/é ad.mp4"}, None),
    ({"source_type": "local", "path": "/srv/media/ad.mp4"}, None),
    ({"source_type": "local", "path": "ads/ad.mp4"}, None),  # inside LOCAL_MEDIA_ROOT
    ({"source_type": "s3", "s3_key": ""}, "s3_key"),
    ({"source_type": "s3", "s3_key": "   "}, "s3_key"),
    ({"source_type": "s3"}, "s3_key"),
    ({"source_type": "s3", "s3_key": "/videos/ad.mp4"}, "s3_key"),
    ({"source_type": "s3", "s3_key": "videos/../../x.mp4"}, "s3_key"),
    ({"source_type": "s3", "s3_key": ".."}, "s3_key"),
    ({"source_type": "s3", "s3_key": "videos/a\n.mp4"}, "s3_key"),
    ({"source_type": "s3", "s3_key": " videos/a.mp4"}, "s3_key"),
    ({"source_type": "s3", "s3_key": "é" * 600}, "s3_key"),  # 1,200 bytes
    ({"source_type": "local", "path": "../../etc/shadow"}, "path"),
    ({"source_type": "local", "path": "/srv/media/../../etc/shadow"}, "path"),
    ({"source_type": "local", "path": OUTSIDE[0]}, "path"),
    ({"source_type": "local", "path": OUTSIDE[1]}, "path"),
    ({"source_type": "local", "path": ""}, "path"),
    ({"source_type": "local", "path": "/srv/media/a\x01.mp4"}, "path"),
    ({"s3_key": "videos/ad.mp4"}, "source_type"),
    ({"source_type": "ftp", "s3_key": "videos/ad.mp4"}, "source_type"),
    ({"source_type": "S3", "s3_key": "videos/ad.mp4"}, "source_type"),
]


def queue_service_verdict(job_input: dict[str, Any], root: Path | None) -> str | None:
    message = struct_pb2.Struct()
    message.update(job_input)
    try:
        admin._new_job(admin_pb.EnqueueJobRequest(input=message), root)
    except InvalidArgument as error:
        assert error.message.startswith("invalid input: ")
        return error.metadata["field"].removeprefix("input.")
    return None


def pipeline_verdict(job_input: dict[str, Any], root: Path | None) -> str | None:
    config = PipelineConfig(s3_bucket="adverts", local_media_root=root)
    try:
        parse_source(job_input, config)
    except PermanentError as error:
        assert error.code == "INVALID_INPUT"
        try:
            ingest_input.parse(job_input, root)
        except InputError as shared:
            return shared.field
        return "path"  # only a symlink check can refuse what the shared rules accept
    return None


def gateway_verdict(job_input: dict[str, Any]) -> str | None:
    try:
        REST.validate_python(job_input)
    except ValidationError as error:
        # The field the gateway names in its 400, as FastAPI reports a body's errors.
        _, field = validation_message([{**e, "loc": ("body", *e["loc"])} for e in error.errors()])
        return field
    return None


@pytest.mark.parametrize(("job_input", "fault"), CASES, ids=lambda v: repr(v)[:60])
def test_the_queue_service_and_the_pipeline_judge_alike(
    job_input: dict[str, Any], fault: str | None
) -> None:
    assert queue_service_verdict(job_input, ROOT) == fault
    assert pipeline_verdict(job_input, ROOT) == fault


@pytest.mark.parametrize(("job_input", "fault"), CASES, ids=lambda v: repr(v)[:60])
def test_the_gateway_refuses_what_the_schema_refuses_without_a_root(
    job_input: dict[str, Any], fault: str | None
) -> None:
    # The gateway does not know LOCAL_MEDIA_ROOT: the containment rule is the queue service's
    # (a 400 all the same, through the one gRPC -> HTTP mapping).
    assert gateway_verdict(job_input) == (None if job_input.get("path") in OUTSIDE else fault)
    if fault is None:
        assert queue_service_verdict(job_input, None) in (None, "path")


def test_without_a_root_a_local_path_must_be_absolute() -> None:
    assert queue_service_verdict({"source_type": "local", "path": "/etc/ad.mp4"}, None) is None
    assert queue_service_verdict({"source_type": "local", "path": "ads/ad.mp4"}, None) == "path"
    assert pipeline_verdict({"source_type": "local", "path": "ads/ad.mp4"}, None) == "path"


def test_other_keys_are_kept_for_custom_pipelines() -> None:
    job_input = {"source_type": "s3", "s3_key": "videos/ad.mp4", "frames": 3, "gate": "x"}
    assert queue_service_verdict(job_input, None) is None
    assert pipeline_verdict(job_input, None) is None


def test_an_input_that_is_not_an_object_is_refused_by_the_shared_rules() -> None:
    with pytest.raises(InputError) as raised:
        ingest_input.parse(["videos/ad.mp4"], None)
    assert raised.value.field == ""
