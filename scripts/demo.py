"""The whole stack on one machine, ingesting a sample advert: `python -m scripts.demo`.

Starts, each as its own process with its log under .run/logs/:
  - PostgreSQL: DATABASE_URL when set, else a private server in .data/postgres (unix socket);
  - object storage: S3_BUCKET (boto3's AWS_* settings) when set, else a local S3-compatible server
    (moto) with a bucket for the demo;
  - the queue service, the REST gateway and two workers, by their documented commands.
Then it makes a sample advert (ffmpeg + espeak-ng), puts it in the bucket, enqueues it through
the REST API, shows its stages and progress as the workers run it, and prints the result. The
stack keeps running until Ctrl-C (or exits at once with --exit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3

from queue_service.config import mask_url
from queue_service.healthcheck import check
from scripts.embedded_postgres import EmbeddedPostgres
from scripts.sample_advert import make_advert
from worker_service.pipeline.factory import STAGE_NAMES

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SAMPLE_KEY = "videos/sample-advert.mp4"
STAGE_ORDER = {name: i for i, name in enumerate(STAGE_NAMES)}


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int) -> int:
    if port_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    what: str,
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes] | None,
    log: Path | None,
    timeout: float = 60.0,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise SystemExit(f"error: {what} exited with code {process.returncode}\n{tail}")
        time.sleep(0.2)
    raise SystemExit(f"error: {what} not ready after {timeout:.0f}s (see {log})")


class Stack:
    """The processes of the demo; stops all of them on exit."""

    def __init__(self, run_dir: Path) -> None:
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, args: list[str], env: dict[str, str]
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                args,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append((name, process))
        return process, log

    def stop(self) -> None:
        # Workers first, so they hand back what they run while the queue service still answers.
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
            if process.poll() is None:
                process.kill()


def http(
    method: str, url: str, key: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"X-Admin-Key": key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def said(text: str, log: Path) -> Callable[[], bool]:
    return lambda: text in log.read_text(errors="replace")


def gateway_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def queue_serving(addr: str) -> bool:
    try:
        return check(addr, timeout=1) == "SERVING"
    except Exception:
        return False


@contextlib.contextmanager
def object_store(stack: Stack) -> Iterator[dict[str, str]]:
    """The S3 settings the workers get: the user's, or a local S3-compatible server's."""
    if os.environ.get("S3_BUCKET"):
        yield {}
        return
    port = pick_port(5055)
    process, log = stack.start(
        "s3", [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], {}
    )
    env = {
        "S3_BUCKET": "tellyads-demo",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "demo",
        "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until("local S3 server", listening, process, log)
    yield env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT / ".data",
        help="where the private PostgreSQL keeps its data (default .data)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=ROOT / ".run",
        help="logs and the generated admin key (default .run)",
    )
    parser.add_argument(
        "--exit", action="store_true", help="stop the stack once the advert is ingested"
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    args.run_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(args.run_dir)
    embedded: EmbeddedPostgres | None = None
    try:
        database_url = os.environ.get("DATABASE_URL") or os.environ.get("SUPABASE_DB_URL")
        if not database_url:
            embedded = EmbeddedPostgres(args.data_dir.resolve() / "postgres")
            database_url = embedded.start()
            print(f"PostgreSQL: private server in {embedded.folder}")
        print(f"Database: {mask_url(database_url)}")

        queue_port = pick_port(int(os.environ.get("QUEUE_PORT", "50051")))
        queue_addr = f"127.0.0.1:{queue_port}"
        gateway_port = pick_port(int(os.environ.get("GATEWAY_PORT", "3000")))
        metrics_port = pick_port(9101)
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        admin_key = os.environ.get("ADMIN_API_KEY") or secrets.token_urlsafe(24)
        key_file = args.run_dir / "admin-api-key"
        key_file.write_text(admin_key + "\n")
        key_file.chmod(0o600)

        with object_store(stack) as s3_env:
            process, log = stack.start(
                "queue_service",
                [PYTHON, "-m", "queue_service"],
                {
                    "DATABASE_URL": database_url,
                    "QUEUE_LISTEN": queue_addr,
                    "QUEUE_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
                },
            )
            wait_until("queue service", lambda: queue_serving(queue_addr), process, log)
            print(f"Queue service: {queue_addr} (gRPC)")
            process, log = stack.start(
                "gateway",
                [PYTHON, "-m", "gateway"],
                {
                    "QUEUE_ADDR": queue_addr,
                    "ADMIN_API_KEY": admin_key,
                    "GATEWAY_PORT": str(gateway_port),
                    "GATEWAY_HOST": "127.0.0.1",
                },
            )
            wait_until("gateway", lambda: gateway_healthy(gateway_url), process, log)
            print(f"Gateway: {gateway_url} (REST; X-Admin-Key in {key_file})")
            print(f"Dashboard: {gateway_url}/ui/ (sign in with the key in {key_file})")
            print(
                f"Metrics: http://127.0.0.1:{metrics_port}/metrics (queue service), "
                f"{gateway_url}/metrics (gateway)"
            )
            for n in range(1, args.workers + 1):
                worker, log = stack.start(
                    f"worker-{n}",
                    [PYTHON, "-m", "worker_service", "--poll-interval", "2"],
                    {"QUEUE_ADDR": queue_addr, **s3_env},
                )
                wait_until(f"worker {n}", said("Worker ready", log), worker, log, timeout=120)
            print(f"Workers: {args.workers} (logs in {stack.logs})")

            key = upload_sample(args.run_dir / "sample", s3_env)
            status, answer = http(
                "POST",
                f"{gateway_url}/api/ingest/enqueue",
                admin_key,
                {"source_type": "s3", "s3_key": key},
            )
            if status not in (200, 201):
                raise SystemExit(f"error: enqueue answered {status}: {answer}")
            job_id = answer["job_id"]
            known = "already known" if answer["already_existed"] else "new"
            print(f"\nEnqueued {key} as job {job_id} ({known})")
            job = follow(gateway_url, admin_key, job_id)
            report(job)
            if job["status"] != "SUCCEEDED":
                return 1
            print(
                "\nThe stack is running:\n"
                f'  curl -H "X-Admin-Key: $(cat {key_file})" {gateway_url}/api/ingest/stats\n'
                f"  grpcurl -plaintext {queue_addr} list\n"
                f"  python -m worker_service --show-running   (with QUEUE_ADDR={queue_addr})\n"
                f"  logs: {stack.logs}"
            )
            if args.exit:
                return 0
            print("Press Ctrl-C to stop it.")
            signal.signal(signal.SIGTERM, _interrupt)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
            return 0
    finally:
        print("Stopping the stack...")
        stack.stop()
        if embedded is not None:
            embedded.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def upload_sample(folder: Path, s3_env: dict[str, str]) -> str:
    advert = make_advert(folder)
    env = {**os.environ, **s3_env}
    client = boto3.client(
        "s3",
        endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
        region_name=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"),
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
    )
    bucket = env["S3_BUCKET"]
    with contextlib.suppress(
        client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
    ):
        if s3_env:
            client.create_bucket(Bucket=bucket)
    client.upload_file(str(advert.path), bucket, SAMPLE_KEY)
    print(
        f"Sample advert: {advert.duration:.0f} s {advert.width}x{advert.height} -> s3://{bucket}/{SAMPLE_KEY}"
    )
    return SAMPLE_KEY


def follow(gateway_url: str, admin_key: str, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
    """Print each change of status, stage and progress until the job finishes."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, answer = http("GET", f"{gateway_url}/api/ingest/jobs/{job_id}", admin_key)
        if status != 200:
            raise SystemExit(f"error: reading the job answered {status}: {answer}")
        job = answer["job"]
        seen = (job["status"], job["stage"], round(job["progress"] or 0, 2))
        if seen != last:
            print(f"  {job['status']:<9} stage={job['stage'] or '-':<18} progress={seen[2]:.0%}")
            last = seen
        if job["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return dict(job)
        time.sleep(0.3)
    raise SystemExit(f"error: job {job_id} did not finish within {timeout:.0f}s")


def report(job: dict[str, Any]) -> None:
    output = job.get("output") or {}
    if job["status"] != "SUCCEEDED":
        print(f"\nJob {job['status']}: {job.get('error_code')}: {job.get('last_error')}")
        return
    print(f"\nJob SUCCEEDED in {job['attempts']} attempt(s): ad_id={output.get('ad_id')}")
    if output.get("summary"):
        print(f"  {output['summary']}")
    for stage, reason in (output.get("skipped") or {}).items():
        print(f"  skipped {stage}: {reason}")
    timings = output.get("stage_timings") or {}
    if timings:
        print(
            "  stage timings: "
            + ", ".join(f"{name} {seconds:.2f}s" for name, seconds in timings.items())
        )


if __name__ == "__main__":
    sys.exit(main())
