"""TLS and mutual TLS end to end: `python -m queue_service` with certificates made in the test,
a real worker and gateway, and grpcurl, each verifying the server; under mutual TLS their client
certificates (CN worker / gateway / admin) are their credentials, with no token at all."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_grpcurl import GRPCURL
from tests.support.certificates import Authority, Issued
from tests.support.databases import create_database, drop_database, url_for
from tests.support.processes import gateway_process, queue_service_process, worker_process

pytestmark = pytest.mark.e2e

ADMIN_KEY = "tls-admin-key-0123456789"
WORKER_TOKEN = "tls-worker-token-0123456789"
ADMIN_TOKEN = "tls-admin-token-0123456789"


@dataclass
class Deployment:
    mutual: bool
    ca: Authority
    queue_port: int
    gateway_url: str
    worker_env: dict[str, str]

    def grpcurl(
        self,
        *words: str,
        client: Issued | None = None,
        data: str | None = None,
        token: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        options = ["-cacert", str(self.ca.cert)]
        if token is not None:
            options += ["-H", f"authorization: Bearer {token}"]
        if client is not None:
            options += ["-cert", str(client.cert), "-key", str(client.key)]
        if data is not None:
            options += ["-d", data]
        return subprocess.run(
            [GRPCURL, *options, f"127.0.0.1:{self.queue_port}", *words],
            capture_output=True,
            text=True,
            timeout=30,
        )


def client_env(ca: Authority, client: Issued | None) -> dict[str, str]:
    env = {"QUEUE_TLS_CA_FILE": str(ca.cert)}
    if client is not None:
        env |= {
            "QUEUE_TLS_CLIENT_CERT_FILE": str(client.cert),
            "QUEUE_TLS_CLIENT_KEY_FILE": str(client.key),
        }
    return env


@pytest.fixture(scope="module", params=[False, True], ids=["tls", "mtls"])
def deployment(
    request: pytest.FixtureRequest, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    mutual: bool = request.param
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority.create(folder)
    server = ca.issue("queue", server=True)
    queue_env = {"QUEUE_TLS_CERT_FILE": str(server.cert), "QUEUE_TLS_KEY_FILE": str(server.key)}
    if mutual:
        # The certificates are the credentials: no token anywhere.
        queue_env["QUEUE_TLS_CLIENT_CA_FILE"] = str(ca.cert)
        gateway_env = client_env(ca, ca.issue("gateway"))
        worker_env = client_env(ca, ca.issue("worker"))
    else:
        queue_env |= {"QUEUE_WORKER_TOKEN": WORKER_TOKEN, "QUEUE_ADMIN_TOKEN": ADMIN_TOKEN}
        gateway_env = {**client_env(ca, None), "QUEUE_ADMIN_TOKEN": ADMIN_TOKEN}
        worker_env = {**client_env(ca, None), "QUEUE_WORKER_TOKEN": WORKER_TOKEN}
    objects = folder / "objects"
    (objects / "videos").mkdir(parents=True)
    (objects / "videos" / "tls.mp4").write_bytes(b"not really a video" * 100)
    name = create_database(template=template_database, prefix="jq_tls")
    try:
        with contextlib.ExitStack() as processes:
            queue = processes.enter_context(queue_service_process(url_for(name), **queue_env))
            queue_addr = f"127.0.0.1:{queue.port}"
            _, gateway_url = processes.enter_context(
                gateway_process(queue_addr, ADMIN_KEY, **gateway_env)
            )
            yield Deployment(
                mutual,
                ca,
                queue.port,
                gateway_url,
                {
                    "QUEUE_ADDR": queue_addr,
                    "QUEUE_AUTH_TOKEN": "",
                    "WORKER_PIPELINE": "tests.worker.pipelines:build_pipeline",
                    "TEST_OBJECT_ROOT": str(objects),
                    **worker_env,
                },
            )
    finally:
        drop_database(name)


def test_the_gateway_and_a_worker_run_a_job_over_tls(deployment: Deployment) -> None:
    headers = {"X-Admin-Key": ADMIN_KEY}
    with httpx.Client(base_url=deployment.gateway_url, headers=headers, timeout=30) as http:
        assert http.get("/healthz").json()["queue_service"] == "SERVING"
        created = http.post(
            "/api/ingest/enqueue", json={"source_type": "s3", "s3_key": "videos/tls.mp4"}
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
        with worker_process(["--once"], deployment.worker_env) as worker:
            assert worker.wait() == 0, worker.output
        assert f"Job {job_id[:8]} succeeded" in worker.output, worker.output
        job = http.get(f"/api/ingest/jobs/{job_id}").json()["job"]
    assert job["status"] == "SUCCEEDED"
    assert job["output"]["ad_id"], job  # stored through AdvertService over the same channel
    credential = "cert:gateway" if deployment.mutual else "QUEUE_ADMIN_TOKEN"
    assert [(e["action"], e["credential"]) for e in job["audit_trail"]] == [("enqueue", credential)]


def test_grpcurl_verifies_the_server_and_presents_its_credential(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Listing needs no credential (reflection stays open), but it needs the CA: -plaintext fails.
    listed = deployment.grpcurl("list")
    if deployment.mutual:
        assert listed.returncode != 0  # no client certificate, no handshake
        admin = deployment.ca.issue("admin")
        listed = deployment.grpcurl("list", client=admin)
    assert listed.returncode == 0, listed.stderr
    assert "jobqueue.v1.AdminService" in listed.stdout.split()
    plaintext = subprocess.run(
        [GRPCURL, "-plaintext", f"127.0.0.1:{deployment.queue_port}", "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plaintext.returncode != 0

    method = "jobqueue.v1.AdminService/GetQueueStats"
    if deployment.mutual:
        stats = deployment.grpcurl(method, client=admin)
        refused = deployment.grpcurl(method, client=deployment.ca.issue("intern"))
        worker_claim = deployment.grpcurl(
            "jobqueue.v1.AdminService/CancelJob",
            client=deployment.ca.issue("worker"),
            data='{"job_id": "00000000-0000-4000-8000-000000000000"}',
        )
        assert "PermissionDenied" in worker_claim.stderr, worker_claim.stderr
    else:
        stats = deployment.grpcurl(method, token=ADMIN_TOKEN)
        refused = deployment.grpcurl(method)
    assert stats.returncode == 0, stats.stderr
    assert "Unauthenticated" in refused.stderr, refused.stderr
