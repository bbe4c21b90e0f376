"""TLS for the gRPC hop, read from the environment: off unless configured.

Server side (queue service): QUEUE_TLS_CERT_FILE and QUEUE_TLS_KEY_FILE (PEM) turn TLS on;
QUEUE_TLS_CLIENT_CA_FILE also requires every client to present a certificate signed by that CA
(mutual TLS). A verified client certificate whose common name or subject alternative name is
listed in QUEUE_TLS_WORKER_NAMES (default `worker`) or QUEUE_TLS_ADMIN_NAMES (default
`admin,gateway`) carries that role without a token (queue_service/auth.py).

Client side (worker, gateway, the healthcheck): QUEUE_TLS_CA_FILE (the CA that signed the
server's certificate; the system roots when unset) and, for mutual TLS,
QUEUE_TLS_CLIENT_CERT_FILE and QUEUE_TLS_CLIENT_KEY_FILE. Any of the three turns TLS on.
QUEUE_TLS_SERVER_NAME checks the server's certificate against that name instead of the host
of QUEUE_ADDR (a certificate for `queue` reached as 127.0.0.1). The files are read once at start-up,
so a missing or unreadable one stops the process with one line naming the variable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

from jobqueue.settings import Env


def _read(env: Env, name: str) -> bytes | None:
    raw = env.raw(name)
    if raw is None:
        return None
    try:
        data = Path(raw).expanduser().read_bytes()
    except OSError as error:
        raise env.error(name, f"cannot be read: {error.strerror or error}") from None
    if b"-----BEGIN " not in data:
        raise env.error(name, f"must be a PEM file, got {raw!r}")
    return data


def _names(env: Env, name: str, default: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.text(name, default).split(",") if part.strip())


@dataclass(frozen=True)
class ServerTls:
    certificate_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    # With it, client certificates are required and verified (mutual TLS).
    client_ca: bytes | None = field(default=None, repr=False)
    worker_names: tuple[str, ...] = ("worker",)
    admin_names: tuple[str, ...] = ("admin", "gateway")

    @classmethod
    def from_env(cls, env: Env) -> ServerTls | None:
        cert = _read(env, "QUEUE_TLS_CERT_FILE")
        key = _read(env, "QUEUE_TLS_KEY_FILE")
        client_ca = _read(env, "QUEUE_TLS_CLIENT_CA_FILE")
        if cert is None and key is None:
            if client_ca is not None:
                raise env.error(
                    "QUEUE_TLS_CLIENT_CA_FILE", "needs QUEUE_TLS_CERT_FILE and QUEUE_TLS_KEY_FILE"
                )
            return None
        if cert is None or key is None:
            raise env.error("QUEUE_TLS_CERT_FILE", "and QUEUE_TLS_KEY_FILE must be set together")
        return cls(
            certificate_chain=cert,
            private_key=key,
            client_ca=client_ca,
            worker_names=_names(env, "QUEUE_TLS_WORKER_NAMES", "worker"),
            admin_names=_names(env, "QUEUE_TLS_ADMIN_NAMES", "admin,gateway"),
        )

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.mutual,
        )


@dataclass(frozen=True)
class ClientTls:
    # None: the system's roots.
    ca: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    @classmethod
    def from_env(cls, env: Env) -> ClientTls | None:
        ca = _read(env, "QUEUE_TLS_CA_FILE")
        cert = _read(env, "QUEUE_TLS_CLIENT_CERT_FILE")
        key = _read(env, "QUEUE_TLS_CLIENT_KEY_FILE")
        if (cert is None) != (key is None):
            raise env.error(
                "QUEUE_TLS_CLIENT_CERT_FILE", "and QUEUE_TLS_CLIENT_KEY_FILE must be set together"
            )
        if ca is None and cert is None:
            return None
        return cls(
            ca=ca,
            certificate_chain=cert,
            private_key=key,
            server_name=env.raw("QUEUE_TLS_SERVER_NAME"),
        )

    def options(self) -> list[tuple[str, str]]:
        """Channel options: the name the server's certificate must carry, when not the host's."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )
