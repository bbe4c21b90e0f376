"""`python -m gateway`: the admin REST gateway on GATEWAY_HOST:GATEWAY_PORT.

Configuration is validated before anything starts: without ADMIN_API_KEY the gateway prints one
line saying so and exits 2, rather than serving an API that nobody can (or everybody could) use.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from types import FrameType

import uvicorn

from gateway.app import create_app
from gateway.config import Config, ConfigError
from jobqueue import logs, tracing

log = logging.getLogger("gateway")

EXIT_CONFIG = 2
EXIT_STARTUP = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="The ingestion job queue's admin REST gateway (REST -> gRPC AdminService).",
        epilog=(
            "Environment: ADMIN_API_KEY (required), GATEWAY_HOST (0.0.0.0), GATEWAY_PORT (3000), "
            "QUEUE_ADDR (127.0.0.1:50051), QUEUE_AUTH_TOKEN, GATEWAY_GRPC_TIMEOUT_SECONDS (10), "
            "GATEWAY_MAX_BODY_BYTES (65536), GATEWAY_HEALTH_MAX_WAIT_SECONDS (900), LOG_LEVEL, "
            "LOG_FORMAT (text | json), OTEL_EXPORTER_OTLP_ENDPOINT (traces; off unless set) and "
            "the other OTEL_* variables. Metrics: GET /metrics (no key)."
        ),
    )
    parser.add_argument("--host", help="address to listen on (env GATEWAY_HOST, default 0.0.0.0)")
    parser.add_argument("--port", help="port to listen on (env GATEWAY_PORT, default 3000)")
    parser.add_argument("--queue-addr", help="the queue service (env QUEUE_ADDR)")
    return parser.parse_args(argv)


def bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so a taken port is one clear error and port 0 reports its number."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    try:
        logs.configure(logs.log_format(env), env.get("LOG_LEVEL", "INFO"))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    for name, value in (
        ("GATEWAY_HOST", args.host),
        ("GATEWAY_PORT", args.port),
        ("QUEUE_ADDR", args.queue_addr),
    ):
        if value:
            env[name] = value
    try:
        config = Config.from_env(env)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        sock = bind(config.host, config.port)
    except OSError as error:
        print(f"error: cannot listen on {config.host}:{config.port}: {error}", file=sys.stderr)
        return EXIT_STARTUP
    port = sock.getsockname()[1]
    tracing.setup("gateway", env)
    server = GatewayServer(
        uvicorn.Config(
            create_app(config),
            # Logging is configured above, once; uvicorn's own config would replace it.
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    )
    # The socket already listens: connections made from now on wait in its backlog until
    # uvicorn accepts them, so this line is true as soon as it is printed.
    print(
        f"Gateway listening on http://{config.host}:{port} (queue service at {config.queue_addr})",
        flush=True,
    )
    server.run(sockets=[sock])
    tracing.shutdown()
    return 0 if server.started else EXIT_STARTUP


class GatewayServer(uvicorn.Server):
    """uvicorn's server, exiting 0 after a graceful stop on SIGTERM/SIGINT.

    uvicorn re-raises the signal once it has shut down, so the process would end as killed by
    it (exit 143 under Docker, which reads as a crash) although it stopped cleanly.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


if __name__ == "__main__":
    sys.exit(main())
