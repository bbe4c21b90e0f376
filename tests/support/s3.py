"""A local S3: moto's server as a process, and a bucket on it holding the sample advert."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from scripts.sample_advert import make_advert
from tests.support.processes import PYTHON, Process, free_port, started

# moto accepts any credentials; these are the ones its documentation uses.
ACCESS_KEY_ID = SECRET_ACCESS_KEY = "testing"


@contextmanager
def moto_server() -> Iterator[Process]:
    """moto's S3 server on a free loopback port (`process.port`), waited on until it listens."""
    port = free_port()
    command = [str(Path(PYTHON).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with started(command, name="moto_server") as process:
        process.wait_for_line(rf"Running on http://127\.0\.0\.1:{port}")
        process.port = port
        yield process


def bucket_with_the_sample_advert(
    endpoint: str, bucket: str, keys: Iterable[str], folder: Path, region: str = "us-east-1"
) -> None:
    """Create `bucket` on the S3 server at `endpoint` and store the sample advert
    (scripts/sample_advert.py, made in `folder`) under every key."""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )
    if region == "us-east-1":
        # S3 refuses a LocationConstraint of us-east-1: that region is the one without it.
        client.create_bucket(Bucket=bucket)
    else:
        location: Any = {"LocationConstraint": region}
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration=location)
    advert = make_advert(folder)
    for key in keys:
        client.upload_file(str(advert.path), bucket, key)
