"""This project's real processes on a fresh database, for the benchmarks that time them alone.

    with stack(root) as running:          # the queue service of checkout `root`, listening
        worker = running.start_worker(10)  # python -m worker_service, bench/noop_pipeline.py

Each step is bounded: a service that does not say it listens within START_SECONDS (a port in
use, a database it cannot reach) ends the run with its reason, and on the way out every process
is stopped and the database dropped, whatever happened.
"""

from __future__ import annotations

import argparse
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import cpu_seconds, free_port, fresh_database  # noqa: E402

__all__ = ["cpu_seconds", "free_port", "postgres_cpu_seconds", "stack"]
START_SECONDS = 60.0


def postgres_cpu_seconds() -> float:
    """User and system CPU time so far, summed over every PostgreSQL process of this machine."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                total += cpu_seconds(int(pid))
        except OSError:  # gone meanwhile
            pass
    return total


def add_root_argument(parser: argparse.ArgumentParser) -> None:
    """--root: the checkout whose processes run (this one by default), for A/B runs."""
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the checkout whose processes run (A/B)"
    )


@dataclass
class Stack:
    root: Path
    url: str
    target: str
    env: dict[str, str]
    service: subprocess.Popen[str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker_service", "--concurrency", str(concurrency)],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(worker)
        return worker

    def client(self, *argv: str, timeout: float) -> str:
        """bench/project_client.py's output, run against this queue service."""
        script = str(ROOT / "bench" / "project_client.py")
        return subprocess.run(
            [sys.executable, script, argv[0], "--target", self.target, *argv[1:]],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        ).stdout


def wait_listening(service: subprocess.Popen[str]) -> None:
    assert service.stdout is not None
    deadline = time.monotonic() + START_SECONDS
    with selectors.DefaultSelector() as selector:
        selector.register(service.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=deadline - time.monotonic()):
                break
            line = service.stdout.readline()
            if not line:
                raise SystemExit(f"the queue service exited ({service.wait()}) before listening")
            if "listening" in line:
                return
    raise SystemExit(f"the queue service did not listen within {START_SECONDS:g} s")


@contextmanager
def stack(root: Path = ROOT) -> Iterator[Stack]:
    with fresh_database("stack") as url:
        service = None
        running = None
        try:
            target = f"127.0.0.1:{free_port()}"
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "QUEUE_LISTEN": target,
                "QUEUE_ADDR": target,
                "QUEUE_METRICS_LISTEN": "off",
                "LOG_LEVEL": "WARNING",
                "WORKER_PIPELINE": "bench.noop_pipeline:build",
                "PYTHONPATH": str(ROOT),  # this checkout's bench/ holds the no-op pipeline
            }
            service = subprocess.Popen(
                [sys.executable, "-m", "queue_service"],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            wait_listening(service)
            running = Stack(root, url, target, env, service)
            yield running
        finally:
            for process in [*(running.workers if running else []), service]:
                if process is not None and process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
