"""What every process's Prometheus endpoint shares: reading its listen address, serving it,
and the buckets of its histograms.

Each process keeps its families in its own module (queue_service/metrics.py,
worker_service/metrics.py, gateway/metrics.py), all named `jobqueue_*`, in prometheus_client's
default registry. The queue service and the worker serve them on a port of their own
(QUEUE_METRICS_LISTEN, WORKER_METRICS_LISTEN); the gateway serves its own at `/metrics`. The
families are documented in docs/observability.md.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client.registry import REGISTRY

from jobqueue.settings import ConfigError, Env

__all__ = ["REGISTRY", "SECONDS_BUCKETS", "MetricsServer", "listen_address", "serve"]

OFF = ("off", "none", "false", "no")
# From a fast heartbeat statement to a long media job: 1 ms .. ~1 h.
SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip


def listen_address(values: Mapping[str, str], name: str, default: str | None) -> str | None:
    """HOST:PORT to serve metrics on; None when the variable is empty or `off` (or unset with
    no default). Port 0 takes any free port (tests)."""
    raw = values.get(name)
    if raw is None:
        return default
    if not raw.strip() or raw.strip().lower() in OFF:
        return None
    try:
        return Env(values).address(name, "")
    except ConfigError as error:
        raise ConfigError(f"{error} (or off)") from None


@dataclass
class MetricsServer:
    """prometheus_client's HTTP server on its own thread: /metrics (any path, in fact)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def url(self, host: str) -> str:
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve(listen: str) -> MetricsServer:
    """Serve the default registry on `listen` (HOST:PORT). OSError when it cannot bind."""
    host, _, port = listen.rpartition(":")
    try:
        server, thread = prometheus_client.start_http_server(int(port), addr=host.strip("[]"))
    except OSError as error:
        raise OSError(f"cannot serve metrics on {listen}: {error.strerror or error}") from error
    return MetricsServer(server, thread)
