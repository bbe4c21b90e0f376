"""The README's main command, minus the install step: the whole stack on its embedded default
database and a local S3-compatible store, ingesting the sample advert."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import PYTHON, Process

pytestmark = pytest.mark.e2e


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: that lies under a folder only root may enter, and as root the
    # private PostgreSQL runs as the 'postgres' user, which must reach its data folder.
    folder = Path(tempfile.mkdtemp(prefix="tellyads-demo-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_demo_ingests_the_sample_advert_on_an_embedded_database(
    data_dir: Path, tmp_path: Path
) -> None:
    # Blank whatever would take the demo off its defaults (an external database or bucket).
    env = {"DATABASE_URL": "", "SUPABASE_DB_URL": "", "S3_BUCKET": "", "OPENAI_API_KEY": ""}
    demo = Process(
        [
            PYTHON,
            "-m",
            "scripts.demo",
            "--exit",
            "--data-dir",
            str(data_dir),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        env=env,
        name="demo",
    )
    try:
        code = demo.wait(timeout=300)
    finally:
        demo.stop()
    output = demo.output
    assert code == 0, output
    assert f"PostgreSQL: private server in {data_dir / 'postgres'}" in output
    assert re.search(r"Enqueued videos/sample-advert\.mp4 as job [0-9a-f-]{36} \(new\)", output), (
        output
    )
    assert re.search(r"Job SUCCEEDED in 1 attempt\(s\): ad_id=[0-9a-f-]{36}", output), output
    assert "8.0 s 320x240" in output
    assert re.search(r"Dashboard: http://127\.0\.0\.1:\d+/ui/ \(sign in with the key in ", output)
    assert "Stopping the stack..." in output
    # Everything it started has stopped: the private server's socket is gone.
    assert not list((data_dir / "postgres" / "socket").glob(".s.PGSQL.*"))
