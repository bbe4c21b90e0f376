"""`python -m queue_service.healthcheck [HOST:PORT]`: exit 0 when the queue service is SERVING.

For container healthchecks and scripts: it asks grpc.health.v1 (open without the bearer token),
so it reports NOT_SERVING, exit 1, while the database is unreachable. Over TLS when the client
side's QUEUE_TLS_* variables say so (jobqueue/tls.py), as the worker and the gateway connect.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobqueue.rpc import open_blocking_channel
from jobqueue.settings import ConfigError, Env
from jobqueue.tls import ClientTls


def check(target: str, timeout: float = 3.0, tls: ClientTls | None = None) -> str:
    with open_blocking_channel(target, tls) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    listen = os.environ.get("QUEUE_LISTEN", "0.0.0.0:50051")
    target = args[0] if args else listen.replace("0.0.0.0", "127.0.0.1", 1)
    try:
        tls = ClientTls.from_env(Env(os.environ))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        status = check(target, tls=tls)
    except grpc.RpcError as error:
        print(f"{target}: {error.code().name}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    print(f"{target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
