"""TLS and mutual TLS on a real loopback server, with certificates made in the test: the
server's certificate verified by clients, client certificates required under mTLS and their
names carrying a role in place of a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from jobqueue.rpc import bearer_metadata, open_channel
from jobqueue.settings import Env
from jobqueue.tls import ClientTls, ServerTls
from jobqueue.v1 import admin_service_pb2 as admin_pb
from jobqueue.v1 import admin_service_pb2_grpc, queue_service_pb2, queue_service_pb2_grpc
from tests.support.certificates import Authority
from tests.support.grpc_server import RunningQueue, running_queue, service_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority.create(tmp_path_factory.mktemp("pki"))


def server_tls(ca: Authority, *, mutual: bool) -> ServerTls:
    issued = ca.issue("queue", server=True)
    env = {"QUEUE_TLS_CERT_FILE": str(issued.cert), "QUEUE_TLS_KEY_FILE": str(issued.key)}
    if mutual:
        env["QUEUE_TLS_CLIENT_CA_FILE"] = str(ca.cert)
    tls = ServerTls.from_env(Env(env))
    assert tls is not None
    return tls


def client_tls(
    ca_file: Path, name: str | None = None, issuer: Authority | None = None
) -> ClientTls:
    env = {"QUEUE_TLS_CA_FILE": str(ca_file)}
    if name is not None and issuer is not None:
        issued = issuer.issue(name)
        env |= {
            "QUEUE_TLS_CLIENT_CERT_FILE": str(issued.cert),
            "QUEUE_TLS_CLIENT_KEY_FILE": str(issued.key),
        }
    tls = ClientTls.from_env(Env(env))
    assert tls is not None
    return tls


async def stats(target: str, tls: ClientTls | None, token: str | None = None) -> grpc.StatusCode:
    channel = open_channel(target, tls)
    try:
        await admin_service_pb2_grpc.AdminServiceStub(channel).GetQueueStats(
            admin_pb.GetQueueStatsRequest(), metadata=bearer_metadata(token), timeout=5
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    finally:
        await channel.close()
    return grpc.StatusCode.OK


async def claim(target: str, tls: ClientTls) -> grpc.StatusCode:
    channel = open_channel(target, tls)
    try:
        await queue_service_pb2_grpc.QueueServiceStub(channel).Claim(
            queue_service_pb2.ClaimRequest(worker_id="w", max_jobs=1), timeout=5
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    finally:
        await channel.close()
    return grpc.StatusCode.OK


@pytest.fixture
async def tls_queue(database_url: str, ca: Authority) -> AsyncIterator[RunningQueue]:
    config = service_config(database_url, tls=server_tls(ca, mutual=False), admin_token="a" * 20)
    async with running_queue(config) as running:
        yield running


async def test_tls_serves_clients_that_trust_its_ca(tls_queue: RunningQueue, ca: Authority) -> None:
    assert await stats(tls_queue.target, client_tls(ca.cert), "a" * 20) == grpc.StatusCode.OK
    # The token is still required over TLS; plaintext and an untrusted server are refused.
    assert await stats(tls_queue.target, client_tls(ca.cert)) == grpc.StatusCode.UNAUTHENTICATED
    assert await stats(tls_queue.target, None, "a" * 20) == grpc.StatusCode.UNAVAILABLE
    stranger = Authority.create(ca.folder / "stranger", "stranger")
    assert await stats(tls_queue.target, client_tls(stranger.cert), "a" * 20) == (
        grpc.StatusCode.UNAVAILABLE
    )


async def test_mutual_tls_makes_the_client_certificate_the_credential(
    database_url: str, ca: Authority
) -> None:
    config = service_config(database_url, tls=server_tls(ca, mutual=True))
    async with running_queue(config) as running:
        target = running.target
        worker = client_tls(ca.cert, "worker", ca)
        admin = client_tls(ca.cert, "admin", ca)
        nobody = client_tls(ca.cert, "intern", ca)
        assert await claim(target, worker) == grpc.StatusCode.OK
        assert await claim(target, admin) == grpc.StatusCode.PERMISSION_DENIED
        assert await stats(target, admin) == grpc.StatusCode.OK
        # A valid certificate whose name carries no role proves nothing.
        assert await stats(target, nobody) == grpc.StatusCode.UNAUTHENTICATED
        # No client certificate, or one from another CA: the handshake fails.
        assert await stats(target, client_tls(ca.cert)) == grpc.StatusCode.UNAVAILABLE
        stranger = Authority.create(ca.folder / "other", "other")
        forged = client_tls(ca.cert, "admin", stranger)
        assert await stats(target, forged) == grpc.StatusCode.UNAVAILABLE
