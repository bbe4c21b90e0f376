"""One configuration reader for every process (jobqueue.settings): finite numbers, bounds, one
line naming it, and database passwords masked wherever a URL is shown."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from gateway.config import Config as GatewayConfig
from jobqueue.settings import ConfigError, Env, mask_url
from queue_service.config import Config as QueueConfig
from tests.support.processes import ROOT


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "NaN", "1e999"])
@pytest.mark.parametrize(
    ("load", "name"),
    [
        (QueueConfig.from_env, "HEARTBEAT_TIMEOUT_SECONDS"),
        (QueueConfig.from_env, "STALE_SWEEP_INTERVAL_SECONDS"),
        (GatewayConfig.from_env, "GATEWAY_GRPC_TIMEOUT_SECONDS"),
        (GatewayConfig.from_env, "GATEWAY_HEALTH_MAX_WAIT_SECONDS"),
    ],
)
def test_non_finite_numbers_are_refused_everywhere(
    load: Callable[[dict[str, str]], object], name: str, raw: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be a finite number, got '{raw}'$"):
        load({"ADMIN_API_KEY": "k" * 32, name: raw})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"N": "x"}, "N must be a number, got 'x'"),
        ({"N": "-1"}, "N must be at least 0, got '-1'"),
        ({"N": "11"}, "N must be at most 10, got '11'"),
        ({"W": "2.5"}, "W must be a whole number, got '2.5'"),
        ({"B": "maybe"}, "B must be true or false, got 'maybe'"),
        ({"A": "http://host"}, "A must be HOST:PORT, got 'http://host'"),
        ({"C": "blue"}, "C must be one of red, green, got 'blue'"),
        ({"D": "relative/dir"}, "D must be an absolute path, got 'relative/dir'"),
    ],
)
def test_each_kind_of_value_has_one_message(values: dict[str, str], message: str) -> None:
    env = Env(values)
    readers = {
        "N": lambda: env.number("N", 1, minimum=0, maximum=10),
        "W": lambda: env.whole("W", 1, minimum=0),
        "B": lambda: env.boolean("B", False),
        "A": lambda: env.address("A", "127.0.0.1:1"),
        "C": lambda: env.choice("C", "red", ("red", "green")),
        "D": lambda: env.directory("D"),
    }
    (name,) = values
    with pytest.raises(ConfigError) as raised:
        readers[name]()
    assert str(raised.value) == message


def test_unset_and_empty_take_the_default_and_labels_name_the_flag() -> None:
    env = Env({"EMPTY": "  "}, label=lambda name: f"--flag ({name})")
    assert env.number("EMPTY", 2.5, minimum=0) == 2.5
    assert env.whole("MISSING", 7, minimum=0) == 7
    assert env.address("MISSING", "[::1]:50051") == "[::1]:50051"
    with pytest.raises(ConfigError, match=r"^--flag \(X\) must be at least 1, got '0'$"):
        Env({"X": "0"}, label=lambda name: f"--flag ({name})").number("X", 1, minimum=1)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:hunter2@db:5432/app", "postgresql://user:***@db:5432/app"),
        ("postgresql://user@db/app", "postgresql://user@db/app"),
        ("postgres://u:p%40ss@h/d?sslmode=require", "postgres://u:***@h/d?sslmode=require"),
        ("postgresql://:secret@h/d", "postgresql://:***@h/d"),
        (
            "postgresql:///d?host=/run&password=hunter2&port=5",
            "postgresql:///d?host=/run&password=***&port=5",
        ),
    ],
)
def test_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.integration
def test_the_gateway_stops_with_one_line_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env={"ADMIN_API_KEY": "k" * 32, "GATEWAY_GRPC_TIMEOUT_SECONDS": "nan", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr == "error: GATEWAY_GRPC_TIMEOUT_SECONDS must be a finite number, got 'nan'\n"
    )
    assert result.stdout == ""
