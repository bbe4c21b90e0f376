"""Fixtures of the fault suite: a background event loop for the proxies, and a fault run over a
fresh database of the shared cluster (tests that restart PostgreSQL make their own cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultRun, fault_run
from tests.support.background_loop import BackgroundLoop, background_loop


@pytest.fixture
def loop() -> Iterator[BackgroundLoop]:
    with background_loop() as running:
        yield running


@pytest.fixture
def run(database_url: str, tmp_path: Path, loop: BackgroundLoop) -> Iterator[FaultRun]:
    with fault_run(database_url, tmp_path, loop) as started:
        yield started
