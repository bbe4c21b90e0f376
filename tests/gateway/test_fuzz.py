"""Schema-driven fuzzing of the running gateway (schemathesis, from its own /openapi.json):
generated valid and invalid requests, and stateful sequences that follow the API's links
(enqueue -> get -> cancel/retry). No request may get a 5xx, and every response must match the
schema the document declares for its status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.gateway.conftest import ADMIN_KEY, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
# Per operation and phase; bounds the run to well under a minute on two cores.
MAX_EXAMPLES = 25


def test_fuzzing_finds_no_server_error(stack: Stack, tmp_path: Path) -> None:
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
        # Schemathesis looks for a config file and writes reports in its working directory.
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
