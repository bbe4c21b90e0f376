"""A fault run: the real processes, the recording proxy between them, the faults, the history.

    queue service (python -m queue_service, on a port that stays the same across restarts)
        ^
        | recording proxy (tests/faults/recorder.py): every Claim, write and answer
        ^
        | optional TCP proxy per worker (partitions, cuts)
        |
    workers (python -m worker_service, WORKER_PIPELINE=tests.faults.pipeline:build)

The trigger of tests/faults/journal.py writes down the database's side; the test pipeline writes
its side effects to files; a probe thread asks GetQueueStats ten times a second so that the
time the service takes to answer again after an outage can be read off. `history()` gathers it
all for `tests.faults.history.check`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.protobuf import struct_pb2

from jobqueue.v1 import admin_service_pb2, admin_service_pb2_grpc
from tests.faults import journal
from tests.faults.history import (
    TERMINAL,
    Fault,
    History,
    LeaseSpan,
    Probe,
    Report,
    Run,
    check,
    lease_spans,
    story,
)
from tests.faults.recorder import RecordingProxy
from tests.support.background_loop import BackgroundLoop
from tests.support.processes import (
    PYTHON,
    Process,
    free_port,
    queue_service_env,
    started,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_for

# Short rules, so that every fault plays out in seconds: a worker beats every 0.3 s, a job is
# stale after 3 s of silence and the reaper looks every 0.5 s.
HEARTBEAT_TIMEOUT_SECONDS = 3.0
SERVICE_ENV = {
    "HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT_SECONDS),
    "STALE_SWEEP_INTERVAL_SECONDS": "0.5",
    "RETRY_BACKOFF_BASE_SECONDS": "0.05",
    "RETRY_BACKOFF_MAX_SECONDS": "0.2",
    "LOG_LEVEL": "WARNING",
}
WORKER_ENV = {
    "WORKER_PIPELINE": "tests.faults.pipeline:build",
    "HEARTBEAT_INTERVAL_SECONDS": "0.3",
    # The worker may need the timeout to fence itself (issue 11): the same value as the service.
    "HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT_SECONDS),
    "WORKER_POLL_INTERVAL": "1",
    "WORKER_SHUTDOWN_GRACE_SECONDS": "3",
    "LOG_LEVEL": "WARNING",
}
# Enough attempts that a job hit by several kills still ends SUCCEEDED, not dead-lettered.
MAX_ATTEMPTS = 50


@dataclass
class FaultRun:
    database_url: str
    folder: Path
    loop: BackgroundLoop
    stack: contextlib.ExitStack
    service_env: dict[str, str] = field(default_factory=lambda: dict(SERVICE_ENV))
    worker_env: dict[str, str] = field(default_factory=lambda: dict(WORKER_ENV))
    service_port: int = field(default_factory=free_port)
    service: Process | None = None
    recorder: RecordingProxy | None = None
    workers: dict[str, Process] = field(default_factory=dict)
    links: dict[str, TcpProxy] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    enqueued: list[str] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    _generation: dict[str, int] = field(default_factory=dict)
    _probing: threading.Event = field(default_factory=threading.Event)
    _last_history: History | None = None

    @property
    def effects(self) -> Path:
        return self.folder / "effects"

    @property
    def service_addr(self) -> str:
        return f"127.0.0.1:{self.service_port}"

    # -- the queue service ------------------------------------------------------------------

    def start_service(self) -> Process:
        env = queue_service_env(self.database_url, self.service_port, **self.service_env)
        process = Process([PYTHON, "-m", "queue_service"], env, "queue_service")
        self.stack.callback(process.stop)
        process.wait_for_line(r"Queue service listening on", timeout=60)
        process.port = self.service_port
        self.service = process
        for link in self.links.values():
            if not link.listening:
                self.loop.run(link.start())
        if self.recorder is None:
            # The first start has migrated the database: the trigger goes in before any job.
            journal.install(self.database_url)
            self.recorder = RecordingProxy(self.service_addr)
            self.loop.run(self.recorder.start())
            self.stack.callback(lambda: self.loop.run(self.recorder.stop()))  # type: ignore[union-attr]
        return process

    def stop_service(self, sig: signal.Signals) -> int:
        """Signal the queue service and wait for it to exit; returns its exit code. The linked
        workers' connections break with it, as they would without the recording proxy between
        them, until `start_service` brings it back."""
        assert self.service is not None
        self.service.signal(sig)
        code = self.service.wait(30)
        for link in self.links.values():
            self.loop.run(link.cut())
        return code

    # -- workers ------------------------------------------------------------------------------

    def start_worker(self, slot: str, *args: str, linked: bool = False, **env: str) -> str:
        """Start a worker in `slot` (a restart is the slot's next generation, with a new worker
        id); `linked`: through a TCP proxy of its own (`self.links[slot]`) that a test can cut
        or partition. Returns its worker id."""
        assert self.recorder is not None, "start the queue service first"
        generation = self._generation.get(slot, 0) + 1
        self._generation[slot] = generation
        worker_id = f"{slot}.{generation}"
        target = self.recorder.target
        if linked:
            if slot not in self.links:
                link = TcpProxy("127.0.0.1", self.recorder.port)
                self.loop.run(link.start())
                self.stack.callback(lambda: self.loop.run(link.cut()))
                self.links[slot] = link
            target = f"127.0.0.1:{self.links[slot].port}"
        full_env = {
            **self.worker_env,
            "QUEUE_ADDR": target,
            "WORKER_ID": worker_id,
            "FAULT_EFFECTS_DIR": str(self.effects),
            **env,
        }
        process = self.stack.enter_context(
            started([PYTHON, "-m", "worker_service", *args], full_env, worker_id)
        )
        self.workers[worker_id] = process
        return worker_id

    def kill_worker(self, worker_id: str, sig: signal.Signals = signal.SIGKILL) -> Fault:
        started_at = time.time()
        self.workers[worker_id].signal(sig)
        if sig == signal.SIGKILL:
            self.workers[worker_id].wait(10)
        fault = Fault(f"{sig.name} {worker_id}", started_at, started_at, frozenset({worker_id}))
        self.faults.append(fault)
        return fault

    def live_workers(self) -> frozenset[str]:
        return frozenset(
            worker_id for worker_id, process in self.workers.items() if process.popen.poll() is None
        )

    # -- producing and waiting --------------------------------------------------------------

    def enqueue(self, count: int, prefix: str = "job") -> list[str]:
        """`count` jobs through EnqueueJobs, straight to the queue service, 500 a call."""
        channel = grpc.insecure_channel(self.service_addr)
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        ids: list[str] = []
        with channel:
            for start in range(0, count, 500):
                requests = []
                for n in range(start, min(count, start + 500)):
                    job_input = struct_pb2.Struct()
                    job_input.update(
                        {"source_type": "s3", "s3_key": f"videos/faults/{prefix}-{n}.mp4"}
                    )
                    requests.append(
                        admin_service_pb2.EnqueueJobRequest(
                            input=job_input, max_attempts=MAX_ATTEMPTS
                        )
                    )
                response = stub.EnqueueJobs(
                    admin_service_pb2.EnqueueJobsRequest(jobs=requests), timeout=30
                )
                ids += [result.job.id for result in response.results]
        self.enqueued += ids
        return ids

    def counts(self) -> dict[str, int]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return journal.counts(conn)

    def settled(self) -> bool:
        counts = self.counts()
        return sum(counts.get(status, 0) for status in TERMINAL) >= len(self.enqueued)

    def wait_until_settled(self, timeout: float) -> None:
        wait_for(
            self.settled,
            timeout=timeout,
            what=lambda: f"every job settled; counts {self.counts()}",
            interval=0.25,
        )

    def running_jobs(self, worker_id: str | None = None) -> int:
        query = "SELECT count(*) FROM ingestion_jobs WHERE status = 'RUNNING'"
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            if worker_id is None:
                row = conn.execute(query).fetchone()
            else:
                row = conn.execute(query + " AND locked_by = %s", (worker_id,)).fetchone()
        return int(row[0]) if row else 0

    # -- probing the service ------------------------------------------------------------------

    @contextlib.contextmanager
    def probing(self) -> Iterator[None]:
        """Ask GetQueueStats every 0.1 s (each call with a 1 s deadline) while inside."""
        self._probing.set()
        thread = threading.Thread(target=self._probe, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._probing.clear()
            thread.join(5)

    def _probe(self) -> None:
        channel = grpc.insecure_channel(self.service_addr)
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        with channel:
            while self._probing.is_set():
                try:
                    stub.GetQueueStats(admin_service_pb2.GetQueueStatsRequest(), timeout=1)
                    ok = True
                except grpc.RpcError:
                    ok = False
                self.probes.append(Probe(time.time(), ok))
                time.sleep(0.1)

    def outage(self, name: str, started_at: float, ended_at: float) -> Fault:
        fault = Fault(name, started_at, ended_at)
        self.faults.append(fault)
        return fault

    # -- the history ------------------------------------------------------------------------

    def runs(self) -> list[Run]:
        found = []
        if self.effects.exists():
            for path in sorted(self.effects.glob("*.jsonl")):
                for line in path.read_text().splitlines():
                    record: dict[str, Any] = json.loads(line)
                    found.append(
                        Run(record["job_id"], record["lease"], record["worker"], record["at"])
                    )
        return found

    def history(self) -> History:
        assert self.recorder is not None
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            transitions = journal.transitions(conn)
            final = journal.final_states(conn)
        return History(
            enqueued=list(self.enqueued),
            claims=list(self.recorder.claims),
            writes=list(self.recorder.writes),
            transitions=transitions,
            runs=self.runs(),
            final=final,
            faults=list(self.faults),
            probes=list(self.probes),
            live_workers=self.live_workers(),
        )

    def report(self) -> Report:
        self._last_history = self.history()
        return check(self._last_history)

    def record(self, name: str, report: Report) -> None:
        """`record` this run's report, with the history it was made from."""
        record(name, report, self._last_history)


@contextlib.contextmanager
def fault_run(database_url: str, folder: Path, loop: BackgroundLoop) -> Iterator[FaultRun]:
    """A fault run over `database_url`; every process it started is stopped on leaving."""
    with contextlib.ExitStack() as stack:
        yield FaultRun(database_url=database_url, folder=folder, loop=loop, stack=stack)


def record(name: str, report: Report, history: History | None = None) -> None:
    """Print the run's figures (and, given the history, the story of a few jobs that ran twice
    or broke a rule); with FAULT_FIGURES set, also append them to that file (one JSON line per
    run), from which the README's table is made."""
    figures = report.figures()
    print(f"\n{name}: {report.summary()}")
    if history is not None:
        shown = [*report.lost, *report.completed_twice, *report.rerun_jobs][:3]
        for job_id in shown:
            print(story(history, job_id, since=min(t.at for t in history.transitions)))
        spans = lease_spans(history)
        for beat in report.stale_beats_acknowledged[:3]:
            span = spans.get((beat.job_id, beat.lease))
            ended = span.ended_by if span is not None else None
            if ended is not None:
                print(
                    f"beat of {beat.job_id} lease {beat.lease} acknowledged: sent "
                    f"{beat.sent_at - ended.at:.3f} s after {ended.status_before}->"
                    f"{ended.status} lease {ended.lease_before}->{ended.lease}"
                )
    path = os.environ.get("FAULT_FIGURES")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"run": name, **figures}) + "\n")


def assert_clean(report: Report) -> None:
    """The three that must be zero (and their relatives), with the run's figures on failure."""
    assert report.violations == [], f"{report.violations}\nfigures: {report.summary()}"


def released_from_live_workers(report: Report, faults: list[Fault]) -> list[LeaseSpan]:
    """Leases the queue service ended although their worker was never killed or stopped:
    healthy work taken away."""
    struck = frozenset().union(*(fault.victims for fault in faults))
    return [span for span in report.service_releases if span.worker not in struck]
