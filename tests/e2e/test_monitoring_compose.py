"""The compose profile `monitoring`: Prometheus scraping every process, Grafana provisioned with
the dashboard. Checked without an engine, like test_compose.py: the resolved file, the files it
mounts, and the dashboard's queries against the families the code defines."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_compose import docker_compose, env_file_with, secrets_set
from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "jobqueue.json"
DOCS = ROOT / "docs" / "observability.md"


SECRETS = secrets_set()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env = env_file_with(tmp_path_factory.mktemp("monitoring"), **SECRETS)
    result = docker_compose(env, "--profile", "monitoring", "config")
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved["services"]


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> the repository file or folder bound there."""
    bound = {}
    for volume in service.get("volumes", []):  # docker-compose 1.29: "SOURCE:TARGET:MODE"
        source, target, _mode = volume.split(":")
        if source.startswith("/"):
            bound[target] = Path(source)
    return bound


def test_prometheus_and_grafana_start_only_with_the_profile(services: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    assert "prometheus" in services["grafana"]["depends_on"]


def test_prometheus_scrapes_each_process_where_it_serves(services: dict[str, Any]) -> None:
    bound = mounts(services["prometheus"])
    config_path = bound["/etc/prometheus/prometheus.yml"]
    assert config_path.resolve() == (DEPLOY / "prometheus" / "prometheus.yml").resolve()
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    queue_port = services["queue"]["environment"]["QUEUE_METRICS_LISTEN"].rpartition(":")[2]
    assert jobs["queue_service"]["static_configs"][0]["targets"] == [f"queue:{queue_port}"]
    # Workers scale: every container behind the service's DNS name, on its metrics port.
    worker_port = services["worker"]["environment"]["WORKER_METRICS_LISTEN"].rpartition(":")[2]
    (discovery,) = jobs["worker"]["dns_sd_configs"]
    assert (discovery["names"], discovery["type"], str(discovery["port"])) == (
        ["worker"],
        "A",
        worker_port,
    )
    gateway_port = services["gateway"]["environment"]["GATEWAY_PORT"]
    assert jobs["gateway"]["static_configs"][0]["targets"] == [f"gateway:{gateway_port}"]
    assert jobs["gateway"]["metrics_path"] == "/metrics"


def test_grafana_is_provisioned_with_the_data_source_and_the_dashboard(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    bound = mounts(grafana)
    provisioning = bound["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )["datasources"]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "jobqueue.yml").read_text(encoding="utf-8")
    )["providers"]
    dashboards = bound[provider["options"]["path"]]
    assert (dashboards / "jobqueue.json").resolve() == DASHBOARD.resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    # Every panel asks the provisioned data source.
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    assert uids == {source["uid"]}
    # The admin password comes from .env, never from the file.
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]


def defined_families() -> set[str]:
    """Every sample name the three processes can expose, from the code itself."""
    import gateway.metrics
    import queue_service.metrics
    import worker_service.metrics
    from jobqueue.metrics import REGISTRY

    names = {name for name in REGISTRY._names_to_collectors if name.startswith("jobqueue_")}
    table = queue_service.metrics.JobTableCollector(
        lambda: None,
        {},
        None,  # type: ignore[arg-type]
    )
    table._read_at = time.monotonic()  # a fresh (empty) reading: no query
    names |= {family.name for family in table.collect()}
    assert gateway.metrics.REQUESTS and worker_service.metrics.JOBS  # imported for REGISTRY
    return names


def test_the_dashboard_asks_only_for_families_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    used = {name for expr in queries for name in re.findall(r"\bjobqueue_\w+", expr)}
    assert used, queries
    unknown = used - defined_families()
    assert not unknown, f"the dashboard asks for families no process exposes: {sorted(unknown)}"
    # Each of the families is on the dashboard.
    for family in (
        "jobqueue_jobs", "jobqueue_jobs_completed_total", "jobqueue_jobs_failed_total",
        "jobqueue_claim_wait_seconds_bucket", "jobqueue_enqueue_to_start_seconds_bucket",
        "jobqueue_worker_job_duration_seconds_bucket",
        "jobqueue_worker_stage_duration_seconds_bucket", "jobqueue_heartbeat_lag_seconds",
        "jobqueue_heartbeat_streams_active", "jobqueue_db_pool_connections",
        "jobqueue_rpc_duration_seconds_bucket",
    ):  # fmt: skip
        assert family in used, family


def test_every_family_is_documented() -> None:
    documented = set(re.findall(r"`(jobqueue_\w+)`", DOCS.read_text(encoding="utf-8")))
    suffixes = ("_bucket", "_count", "_sum", "_created")
    undocumented = {
        name
        for name in defined_families()
        if not name.endswith(suffixes)
        and not {name, f"{name}_total", name.removesuffix("_total")} & documented
    }
    assert not undocumented, f"not in docs/observability.md: {sorted(undocumented)}"
