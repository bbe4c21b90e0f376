"""What happens to a job when things go wrong around it: crashes, pauses, cancels, restarts,
stop signals, refused tokens. Real processes throughout; outcomes read from the rows.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.jobs import fetch_job
from tests.support.processes import Process, free_port, lines_in_order
from tests.support.waiting import wait_for
from tests.worker.conftest import Queue, at_gate, held_job, put_object

pytestmark = pytest.mark.integration


def test_a_killed_worker_s_job_is_rerun_and_succeeds_once(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    results: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    gate = tmp_path / "gate"
    job_id = held_job(queue, objects, gate)
    crashed = worker_factory(queue, "--limit", "1", name="crashed", WORKER_ID="crashed")
    wait_for(lambda: at_gate(db, job_id), what="the job held by the first worker")

    crashed.signal(signal.SIGKILL)
    assert crashed.wait() == -signal.SIGKILL
    gate.touch()
    rescuer = worker_factory(queue, "--limit", "1", name="rescuer", WORKER_ID="rescuer")

    assert rescuer.wait(timeout=30) == 0, rescuer.output
    row = fetch_job(db, job_id)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("SUCCEEDED", 2, "rescuer")
    # Released as soon as its heartbeat stream broke, not at the heartbeat timeout.
    assert [entry["code"] for entry in row["errors"]] == ["WORKER_LOST"]
    assert sorted(p.name for p in results.iterdir()) == [f"{job_id}.2.json"]
    rescuer.wait_for_line(rf"Processing job {job_id[:8]}\.\.\. \(attempt 2/5\)")


def test_a_cancelled_running_job_is_stopped_and_ends_cancelled(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    results: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    job_id = held_job(queue, objects, tmp_path / "never")
    worker = worker_factory(queue, "--limit", "1")
    wait_for(lambda: at_gate(db, job_id), what="the job running")

    queue.cancel(job_id)

    # Within about one heartbeat interval (0.3 s here), not at the heartbeat timeout.
    wait_for(lambda: fetch_job(db, job_id)["status"] == "CANCELLED", timeout=3, what="CANCELLED")
    assert worker.wait() == 0, worker.output
    row = fetch_job(db, job_id)
    assert (row["stage"], row["error_code"], row["attempts"]) == ("cancelled", "CANCELLED", 1)
    assert not results.exists() or not list(results.iterdir())
    worker.wait_for_line(rf"Job {job_id[:8]} cancelled after")
    lines_in_order(worker, [r"Jobs processed: 1", r"Jobs succeeded: 0", r"Jobs failed: 1"])


def test_a_paused_worker_does_not_complete_a_job_it_lost(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    gate = tmp_path / "gate"
    job_id = held_job(queue, objects, gate)
    paused = worker_factory(queue, "--limit", "1", name="paused", WORKER_ID="paused")
    wait_for(lambda: at_gate(db, job_id), what="the job held by the first worker")

    paused.signal(signal.SIGSTOP)
    try:
        # Past the heartbeat timeout the job is released, and another worker takes it.
        other = worker_factory(queue, "--limit", "1", name="other", WORKER_ID="other")
        wait_for(lambda: at_gate(db, job_id, lease=2), what="the job re-claimed by the other")
        # Both may now finish the stage; only the current lease may complete the job.
        gate.touch()
    finally:
        paused.signal(signal.SIGCONT)

    assert other.wait() == 0, other.output
    assert paused.wait() == 0, paused.output
    row = fetch_job(db, job_id)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("SUCCEEDED", 2, "other")
    # Resumed long past the heartbeat timeout with no beat acknowledged since, it stops the job
    # itself before it even hears that its lease is gone.
    paused.wait_for_line(
        rf"Job {job_id[:8]} stopped after .*: no heartbeat acknowledged for .*; not completing it"
    )
    # Whichever stage got there, the stored advert is the current owner's.
    assert db.execute("SELECT job_id FROM adverts").fetchall() == [(row["id"],)]
    assert row["output"]["ad_id"]
    assert "succeeded in" not in paused.output
    lines_in_order(paused, [r"Jobs processed: 1", r"Jobs succeeded: 0", r"Jobs failed: 1"])
    other.wait_for_line(rf"Job {job_id[:8]} succeeded in")


def test_a_queue_service_restart_mid_job_costs_nothing(
    queue_factory: Callable[..., Queue],
    worker_factory: Callable[..., Process],
    objects: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    # A heartbeat timeout long enough to ride out the restart.
    queue = queue_factory(HEARTBEAT_TIMEOUT_SECONDS="30")
    put_object(objects, "videos/a.mp4")
    gate_a, gate_b = tmp_path / "a", tmp_path / "b"
    # A finishes while the service is down: only its Complete has to wait for it.
    job_a = queue.enqueue(
        {"source_type": "s3", "s3_key": "videos/a.mp4", "gate": str(gate_a), "advert": False}
    )
    # B runs on across the restart and then needs the new service for its advert and Complete.
    job_b = held_job(queue, objects, gate_b, "videos/b.mp4")
    worker = worker_factory(
        queue, "--limit", "2", "--concurrency", "2", HEARTBEAT_TIMEOUT_SECONDS="30"
    )
    wait_for(lambda: at_gate(db, job_a) and at_gate(db, job_b), what="both jobs running")

    queue.process.signal(signal.SIGKILL)
    queue.process.wait()
    gate_a.touch()
    worker.wait_for_line(r"Complete failed \(UNAVAILABLE")
    queue_factory(port=queue.port, HEARTBEAT_TIMEOUT_SECONDS="30")
    worker.wait_for_line(rf"Job {job_a[:8]} succeeded in")
    gate_b.touch()

    assert worker.wait(timeout=30) == 0, worker.output
    for job_id in (job_a, job_b):
        row = fetch_job(db, job_id)
        assert (row["status"], row["attempts"], row["lease"]) == ("SUCCEEDED", 1, 1), row
    lines_in_order(worker, [r"Jobs processed: 2", r"Jobs succeeded: 2", r"Jobs failed: 0"])


def test_sigterm_finishes_what_it_can_and_hands_back_the_rest(
    queue: Queue,
    worker_factory: Callable[..., Process],
    objects: Path,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    quick_gate, stuck_gate = tmp_path / "quick", tmp_path / "stuck"
    quick = held_job(queue, objects, quick_gate, "videos/quick.mp4")
    stuck = held_job(queue, objects, stuck_gate, "videos/stuck.mp4")
    worker = worker_factory(queue, "--concurrency", "2", WORKER_SHUTDOWN_GRACE_SECONDS="1.5")
    wait_for(lambda: at_gate(db, quick) and at_gate(db, stuck), what="both jobs running")

    worker.signal(signal.SIGTERM)
    later = queue.enqueue({"source_type": "s3", "s3_key": "videos/quick.mp4", "n": 2})
    quick_gate.touch()

    assert worker.wait() == 0, worker.output
    assert fetch_job(db, quick)["status"] == "SUCCEEDED"
    row = fetch_job(db, stuck)
    # Handed back: runnable again at once, and the unfinished attempt does not count.
    assert (row["status"], row["stage"], row["attempts"]) == ("QUEUED", "released", 0)
    assert row["run_after"] <= row["updated_at"]
    assert row["errors"] == []
    # No claims after the signal.
    assert fetch_job(db, later)["status"] == "QUEUED"
    worker.wait_for_line(rf"Job {stuck[:8]} handed back after")
    lines_in_order(worker, [r"Jobs processed: 2", r"Jobs succeeded: 1", r"Jobs failed: 1"])


def test_a_refused_token_exits_non_zero_with_one_clear_line(
    queue_factory: Callable[..., Queue], worker_factory: Callable[..., Process]
) -> None:
    queue = queue_factory(QUEUE_AUTH_TOKEN="the-right-token")

    worker = worker_factory(queue, "--once", QUEUE_AUTH_TOKEN="a-wrong-token")

    assert worker.wait() == 1, worker.output
    errors = [line for line in worker.lines if line.startswith("error:")]
    assert errors == [
        f"error: the queue service at {queue.addr} refused the token (QUEUE_AUTH_TOKEN): "
        "UNAUTHENTICATED: missing or invalid bearer token"
    ], worker.output
    assert "token-" not in worker.output.replace("(QUEUE_AUTH_TOKEN)", "")
    assert "Worker ready" not in worker.output


def test_an_unreachable_queue_service_exits_non_zero(
    worker_factory: Callable[..., Process],
) -> None:
    addr = f"127.0.0.1:{free_port()}"

    worker = worker_factory(None, "--once", QUEUE_ADDR=addr, WORKER_CONNECT_TIMEOUT_SECONDS="1")

    assert worker.wait() == 1, worker.output
    errors = [line for line in worker.lines if line.startswith("error:")]
    assert len(errors) == 1, worker.output
    assert errors[0].startswith(f"error: cannot reach the queue service at {addr}: UNAVAILABLE")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_CONCURRENCY": "0"}, "--concurrency (WORKER_CONCURRENCY) must be at least 1"),
        (
            {"WORKER_POLL_INTERVAL": "soon"},
            "--poll-interval (WORKER_POLL_INTERVAL) must be a number",
        ),
        ({"WORKER_PIPELINE": "no_such_module:build"}, "cannot load the pipeline"),
    ],
)
def test_a_bad_configuration_stops_at_start_up(
    worker_factory: Callable[..., Process], env: dict[str, str], message: str
) -> None:
    worker = worker_factory(None, "--once", QUEUE_ADDR=f"127.0.0.1:{free_port()}", **env)

    assert worker.wait() == 2, worker.output
    errors = [line for line in worker.lines if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], worker.output
