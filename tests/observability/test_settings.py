"""QUEUE_METRICS_LISTEN and WORKER_METRICS_LISTEN: validated like every setting. Fast."""

from __future__ import annotations

import pytest

from jobqueue.metrics import listen_address
from jobqueue.settings import ConfigError
from queue_service.config import Config
from worker_service.config import resolve


def test_the_queue_service_serves_metrics_on_9101_unless_turned_off() -> None:
    assert Config.from_env({}).metrics_listen == "0.0.0.0:9101"
    assert Config.from_env({"QUEUE_METRICS_LISTEN": "127.0.0.1:0"}).metrics_listen == (
        "127.0.0.1:0"
    )
    for off in ("", "off", "OFF", " none "):
        assert Config.from_env({"QUEUE_METRICS_LISTEN": off}).metrics_listen is None


def test_a_worker_serves_metrics_only_when_asked() -> None:
    assert resolve({}, {}).metrics_listen is None
    assert resolve({}, {"WORKER_METRICS_LISTEN": "0.0.0.0:9102"}).metrics_listen == ("0.0.0.0:9102")


@pytest.mark.parametrize("bad", ["9101", "localhost", "http://x:9101", "x:port"])
def test_a_bad_address_is_one_clear_error(bad: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"QUEUE_METRICS_LISTEN must be HOST:PORT, got '{bad}' \(or off\)"
    ):
        listen_address({"QUEUE_METRICS_LISTEN": bad}, "QUEUE_METRICS_LISTEN", None)
