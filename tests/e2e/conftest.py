"""The whole system for the end-to-end checklist: every process started by its documented command.

One stack per module (starting it, and the real pipeline's runs, are what cost time): a fresh
migrated database, a local S3 server (moto's, as a process) holding the sample advert under the
checklist's keys, `python -m queue_service`, `python -m gateway`, and helpers that run workers
(`python -m worker_service ...`), the checklist's curl snippets (bash) and its SQL (psql), as a
user would. Only the ports differ from the checklist.

The function-scoped `database_url` / `db` fixtures of tests/conftest.py stay untouched: other
modules in this folder (test_grpcurl.py) use them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.databases import create_database, drop_database, psql, url_for
from tests.support.processes import (
    Process,
    gateway_process,
    output_of,
    queue_service_process,
    started,
    worker_process,
)
from tests.support.s3 import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    bucket_with_the_sample_advert,
    moto_server,
)

ADMIN_KEY = "e2e-admin-key-0123456789"
BUCKET = "tellyads-e2e"
# The objects the checklist's jobs name; `nonexistent/fake-video.mp4` is deliberately absent.
SAMPLE_KEYS = (
    "videos/test-ad.mp4",
    *(f"videos/test-{i}.mp4" for i in range(1, 6)),
    *(f"videos/concurrent-{i}.mp4" for i in range(1, 6)),
)

# The queue service's staleness and backoff rules, shortened so the checklist plays out in
# seconds. The heartbeat timeout stays far above the workers' beat (1 s) and above any pause in
# a real pipeline run, so a healthy job is never released. The reaper is off: in Tests 5 and 11
# the operator's `--release-stale` must be what releases the job, not a background sweep.
QUEUE_ENV = {
    "HEARTBEAT_TIMEOUT_SECONDS": "20",
    "STALE_SWEEP_INTERVAL_SECONDS": "0",
    "RETRY_BACKOFF_BASE_SECONDS": "0.2",
    "RETRY_BACKOFF_MAX_SECONDS": "1",
    "LOG_LEVEL": "WARNING",
}


@dataclass
class Stack:
    database_url: str
    queue: Process
    gateway: Process
    gateway_port: int
    s3: Process
    worker_env: dict[str, str]
    workdir: Path
    _processes: contextlib.ExitStack = field(repr=False)

    @property
    def queue_addr(self) -> str:
        return f"127.0.0.1:{self.queue.port}"

    def worker(self, *args: str, name: str = "worker", **env: str) -> Process:
        """`python -m worker_service ARGS`; stopped (SIGTERM) at the latest when the module ends."""
        return self._processes.enter_context(worker_process(args, {**self.worker_env, **env}, name))

    def shell(self, script: str, *, with_status: bool = False) -> str:
        """Run a checklist snippet with bash, as a user would paste it, and return its stdout.

        Only `localhost:3000` is changed, to the gateway's port. With `with_status`, every curl
        also prints `HTTP_STATUS:NNN` on a line of its own, so a test can see 201 vs 200 without
        rewriting the snippet.
        """
        prelude = (
            "curl() { command curl -sS -w '\\nHTTP_STATUS:%{http_code}\\n' \"$@\"; }\n"
            if with_status
            else ""
        )
        body = script.replace("localhost:3000", f"localhost:{self.gateway_port}")
        return output_of(
            ["bash", "-euo", "pipefail", "-c", prelude + body],
            what=f"snippet\n{body}",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ADMIN_API_KEY": ADMIN_KEY},
        )

    def psql(self, script: str, *options: str) -> str:
        return psql(self.database_url, script, *options)

    def query(self, sql: str) -> list[dict[str, str]]:
        """One SELECT through psql --csv: its rows as dicts, keyed by the columns psql shows."""
        return psql_rows(self.psql(sql, "--csv"))

    def watch(self, sql: str, interval: float, name: str) -> Process:
        """psql running `SQL \\watch INTERVAL` (what `watch -n 2 "psql ..."` does) as a process;
        `watched_samples` splits its --csv output into one list of rows per sample."""
        script = self.workdir / f"{name}.sql"
        script.write_text(f"{sql.strip().rstrip(';')} \\watch {interval}\n", encoding="utf-8")
        return self._processes.enter_context(
            started(["psql", self.database_url, "-X", "--csv", "-f", str(script)], name=name)
        )


def psql_rows(output: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(output)))


def psql_columns(output: str) -> list[str]:
    """The header line of psql --csv output: the columns, even when there are no rows."""
    return next(csv.reader(io.StringIO(output)))


def watched_samples(process: Process) -> list[list[dict[str, str]]]:
    """The samples a `Stack.watch` process printed so far: each starts with the header line."""
    lines = list(process.lines)
    if not lines:
        return []
    header = lines[0]
    samples: list[list[str]] = []
    for line in lines:
        if line == header:
            samples.append([])
        else:
            samples[-1].append(line)
    return [psql_rows("\n".join([header, *rows])) for rows in samples]


@pytest.fixture(scope="module")
def stack(template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = create_database(template=template_database, prefix="jq_e2e")
    database_url = url_for(name)
    try:
        with contextlib.ExitStack() as processes:
            s3 = processes.enter_context(moto_server())
            s3_env = {
                "S3_BUCKET": BUCKET,
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3.port}",
                "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
                "AWS_DEFAULT_REGION": "us-east-1",
            }
            bucket_with_the_sample_advert(
                s3_env["AWS_ENDPOINT_URL"], BUCKET, SAMPLE_KEYS, tmp_path_factory.mktemp("advert")
            )
            queue = processes.enter_context(queue_service_process(database_url, None, **QUEUE_ENV))
            queue_addr = f"127.0.0.1:{queue.port}"
            gateway, _ = processes.enter_context(gateway_process(queue_addr, ADMIN_KEY))
            worker_env = {
                "QUEUE_ADDR": queue_addr,
                "QUEUE_AUTH_TOKEN": "",
                **s3_env,
                # No OpenAI: the pipeline runs its local providers and says what it skipped.
                "OPENAI_API_KEY": "",
                "OPENAI_BASE_URL": "",
                # Beats far more often than the 20 s timeout, so polling sees them move.
                "HEARTBEAT_INTERVAL_SECONDS": "1",
                "LOG_LEVEL": "WARNING",
            }
            yield Stack(
                database_url,
                queue,
                gateway,
                gateway.port,
                s3,
                worker_env,
                tmp_path_factory.mktemp("e2e"),
                processes,
            )
    finally:
        drop_database(name)
