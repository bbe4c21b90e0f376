"""Real processes started by their documented commands, for end-to-end tests.

`Process` collects the output lines as they come, so a test waits for the line it expects
(`wait_for_line`) instead of sleeping, and always gets the whole output in its failure message.
Each of the project's processes has one starter here, which returns once
the process listens.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def output_of(args: Sequence[str], *, what: str, timeout: float = 60, **options: Any) -> str:
    """Run a command to its end and return its stdout; if it exits non-zero, fail showing `what`
    it was running and all it printed. `options` go to subprocess.run (input, env, cwd)."""
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **options)
    assert result.returncode == 0, (
        f"{what} failed ({result.returncode}):\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


class Process:
    def __init__(
        self, args: Sequence[str], env: Mapping[str, str] | None = None, name: str = ""
    ) -> None:
        self.name = name or " ".join(args[:3])
        # The loopback port it listens on, for the starters below that choose one.
        self.port = 0
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first output line matching `pattern` (a regex), waiting for it if need be."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"{self.name}: no line matching {pattern!r} "
                        f"(exit code {self.popen.poll()}); output:\n{self.output}"
                    )
                self._changed.wait(min(remaining, 0.2))

    def wait(self, timeout: float = 60.0) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout}s; output:\n{self.output}"
            ) from None
        self._reader.join(5)
        return code

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within `timeout`."""
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._reader.join(5)
        return self.popen.returncode


@contextmanager
def started(
    args: Sequence[str], env: Mapping[str, str] | None = None, name: str = ""
) -> Iterator[Process]:
    process = Process(args, env, name)
    try:
        yield process
    finally:
        process.stop()


def queue_service_env(database_url: str, port: int, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "QUEUE_LISTEN": f"127.0.0.1:{port}",
        "STALE_SWEEP_INTERVAL_SECONDS": "0",
        # Any free port: queue services started side by side must not contend for 9101.
        "QUEUE_METRICS_LISTEN": "127.0.0.1:0",
        **extra,
    }


@contextmanager
def queue_service_process(
    database_url: str, port: int | None = None, **extra_env: str
) -> Iterator[Process]:
    """`python -m queue_service` on a free loopback port, waited on until it listens."""
    port = port or free_port()
    with started(
        [PYTHON, "-m", "queue_service"],
        queue_service_env(database_url, port, **extra_env),
        "queue_service",
    ) as process:
        process.wait_for_line(r"Queue service listening on")
        process.port = port
        yield process


@contextmanager
def gateway_process(
    queue_addr: str, admin_key: str, **extra_env: str
) -> Iterator[tuple[Process, str]]:
    """`python -m gateway` on a free loopback port, waited on until it listens; yields it and
    its base URL."""
    port = free_port()
    env = {
        "ADMIN_API_KEY": admin_key,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "QUEUE_ADDR": queue_addr,
        "QUEUE_AUTH_TOKEN": "",
        **extra_env,
    }
    with started([PYTHON, "-m", "gateway"], env, "gateway") as process:
        process.wait_for_line(r"Gateway listening on")
        process.port = port
        yield process, f"http://127.0.0.1:{port}"


def worker_process(
    args: Sequence[str], env: Mapping[str, str], name: str = "worker"
) -> AbstractContextManager[Process]:
    """`python -m worker_service ARGS`, stopped (SIGTERM) on leaving."""
    return started([PYTHON, "-m", "worker_service", *args], env, name)


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
