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
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from scripts.sample_advert import make_advert
from tests.support.databases import create_database, drop_database, url_for
from tests.support.processes import PYTHON, Process, free_port, queue_service_process, started

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
        return f"127.0.0.1:{self.queue.port}"  # type: ignore[attr-defined]

    def worker(self, *args: str, name: str = "worker", **env: str) -> Process:
        """`python -m worker_service ARGS`; stopped (SIGTERM) at the latest when the module ends."""
        return self._processes.enter_context(
            started([PYTHON, "-m", "worker_service", *args], {**self.worker_env, **env}, name)
        )

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
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", prelude + body],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ADMIN_API_KEY": ADMIN_KEY},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (
            f"snippet failed ({result.returncode}):\n{body}\nstdout:\n{result.stdout}\n"
            f"stderr:\n{result.stderr}"
        )
        return result.stdout

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


def psql(database_url: str, script: str, *options: str) -> str:
    """Run SQL with the real psql, as an operator pastes it (stdin), stopping on any error."""
    result = subprocess.run(
        ["psql", database_url, "-X", "-v", "ON_ERROR_STOP=1", *options],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (
        f"psql failed ({result.returncode}):\n{script}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}"
    )
    return result.stdout


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


def lines_in_order(process: Process, patterns: list[str]) -> None:
    """Every pattern matches a whole output line, in this order (other lines may come between)."""
    lines = process.lines
    position = 0
    for pattern in patterns:
        regex = re.compile(pattern)
        while position < len(lines) and not regex.fullmatch(lines[position]):
            position += 1
        assert position < len(lines), f"no line {pattern!r} in order; output:\n{process.output}"
        position += 1


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def s3_server(folder: Path) -> Iterator[tuple[Process, dict[str, str]]]:
    """moto's S3 server as a process, with the bucket and the sample advert under every key the
    checklist uses; yields it and the environment a worker's boto3 needs (its own AWS_*
    variables)."""
    port = free_port()
    moto = shutil.which("moto_server", path=str(Path(PYTHON).parent)) or "moto_server"
    with started([moto, "-H", "127.0.0.1", "-p", str(port)], name="moto_server") as process:
        deadline = time.monotonic() + 30
        while not _listening(port):
            assert process.popen.poll() is None and time.monotonic() < deadline, (
                f"moto_server did not listen on {port}; output:\n{process.output}"
            )
            time.sleep(0.1)
        env = {
            "S3_BUCKET": BUCKET,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=BUCKET)
        advert = make_advert(folder)
        for key in SAMPLE_KEYS:
            client.upload_file(str(advert.path), BUCKET, key)
        yield process, env


@pytest.fixture(scope="module")
def stack(template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = create_database(template=template_database, prefix="jq_e2e")
    database_url = url_for(name)
    try:
        with contextlib.ExitStack() as processes:
            s3, s3_env = processes.enter_context(s3_server(tmp_path_factory.mktemp("advert")))
            queue = processes.enter_context(queue_service_process(database_url, None, **QUEUE_ENV))
            queue_addr = f"127.0.0.1:{queue.port}"  # type: ignore[attr-defined]
            gateway_port = free_port()
            gateway = processes.enter_context(
                started(
                    [PYTHON, "-m", "gateway"],
                    {
                        "ADMIN_API_KEY": ADMIN_KEY,
                        "GATEWAY_HOST": "127.0.0.1",
                        "GATEWAY_PORT": str(gateway_port),
                        "QUEUE_ADDR": queue_addr,
                        "QUEUE_AUTH_TOKEN": "",
                    },
                    "gateway",
                )
            )
            gateway.wait_for_line(r"Gateway listening on")
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
                gateway_port,
                s3,
                worker_env,
                tmp_path_factory.mktemp("e2e"),
                processes,
            )
    finally:
        drop_database(name)
