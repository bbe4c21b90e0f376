"""The committed stubs in jobqueue/ are what protos/ generates: the contract cannot drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT


@pytest.mark.integration
def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/generate_protos.py", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    generated = sorted(Path(line) for line in result.stdout.split())
    assert generated, "the generator wrote nothing"
    stale = [
        str(path)
        for path in generated
        if not (ROOT / path).exists()
        or (ROOT / path).read_bytes() != (tmp_path / path).read_bytes()
    ]
    assert not stale, f"regenerate with `python scripts/generate_protos.py`: {stale}"
    committed = sorted(
        p.relative_to(ROOT)
        for p in (ROOT / "jobqueue").rglob("*_pb2*")
        if p.suffix in (".py", ".pyi") and "__pycache__" not in p.parts
    )
    assert committed == generated, "jobqueue/ holds generated files that protos/ no longer makes"


def test_generated_code_imports_under_the_pinned_runtime() -> None:
    # Generated code newer than the protobuf runtime raises VersionError at import.
    from jobqueue.v1 import admin_service_pb2, advert_service_pb2, job_pb2, queue_service_pb2

    assert job_pb2.DESCRIPTOR.package == "jobqueue.v1"
    assert {
        queue_service_pb2.DESCRIPTOR.name,
        admin_service_pb2.DESCRIPTOR.name,
        advert_service_pb2.DESCRIPTOR.name,
    }
