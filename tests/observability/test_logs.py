"""LOG_FORMAT: text by default (unchanged), json on request; a job's fields on its lines. Fast:
records are formatted in memory."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from jobqueue import logs
from jobqueue.settings import ConfigError
from jobqueue.v1 import job_pb2
from worker_service import observe
from worker_service.job_log import JobLog
from worker_service.stage_thread import StagesDone


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The root logger writes here for the test; restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        yield out
    finally:
        logs.configure("text", logging.getLevelName(level))
        root.handlers[:] = handlers
        root.setLevel(level)


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_log_format_is_validated() -> None:
    assert logs.log_format({}) == "text"
    assert logs.log_format({"LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(ConfigError, match=r"LOG_FORMAT must be one of text, json, got 'xml'"):
        logs.log_format({"LOG_FORMAT": "xml"})


def test_text_stays_as_it_was(stream: io.StringIO) -> None:
    logs.configure("text", "INFO", stream)
    JobLog(logging.getLogger("worker_service.job_run"), "j-1", 2, "w-1").warning("stage failed")
    (line,) = lines(stream)
    assert line.endswith(
        " WARNING worker_service.job_run: job_id=j-1 attempt=2 worker_id=w-1: stage failed"
    )


def test_json_is_one_object_a_line_with_the_job_fields(stream: io.StringIO) -> None:
    logs.configure("json", "INFO", stream)
    JobLog(logging.getLogger("worker_service.job_run"), "j-1", 2, "w-1").warning("a\nb %s", "c")
    logging.getLogger("gateway").info("no job here")
    first, second = (json.loads(line) for line in lines(stream))
    assert first["message"] == "a\nb c"
    assert (first["job_id"], first["attempt"], first["worker_id"]) == ("j-1", 2, "w-1")
    assert first["level"] == "WARNING" and first["logger"] == "worker_service.job_run"
    assert "job_id" not in second and second["message"] == "no job here"


def test_a_traceback_stays_inside_its_line(stream: io.StringIO) -> None:
    logs.configure("json", "INFO", stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    (line,) = lines(stream)
    assert "ValueError: boom" in json.loads(line)["exc_info"]


def test_a_stage_logs_with_its_job_and_stage(stream: io.StringIO) -> None:
    """Code that knows nothing of jobs (a stage, a provider) logs in the stage thread; its lines
    carry the job and the stage from the job's observation, and nothing after the job."""
    logs.configure("json", "INFO", stream)
    job = job_pb2.Job(id="j-9", attempts=3, queue="default")
    observed = observe.job(job, "w-9")
    provider = logging.getLogger("worker_service.providers.s3")

    def stage_thread() -> None:
        observed.executing()
        started = observed.stage_hook(lambda stage, progress: None)
        started("fetch_video", 0.0)
        provider.info("downloading")
        started("probe_media", 0.5)
        provider.info("probing")
        observed.executed(StagesDone({}, {"fetch_video": 0.1, "probe_media": 0.2}))
        provider.info("between jobs")

    thread = threading.Thread(target=stage_thread)
    thread.start()
    thread.join()
    first, second, after = (json.loads(line) for line in lines(stream))
    assert (first["job_id"], first["attempt"], first["worker_id"]) == ("j-9", 3, "w-9")
    assert first["stage"] == "fetch_video" and second["stage"] == "probe_media"
    assert not {"job_id", "stage"} & set(after)


def test_nothing_observed_costs_nothing() -> None:
    """With metrics, tracing and JSON logs off, every job shares the no-op observation."""
    logs.configure("text", "WARNING")
    assert observe.job(job_pb2.Job(id="j"), "w") is observe.UNOBSERVED
