"""docker-compose.yml, checked without a Docker engine.

No engine runs here, so the compose file is proved in two halves:

1. Debian's `docker-compose` (1.29) resolves and validates it with `config`, which needs no
   engine and rejects unknown keys, wrong types and undefined services (negative controls below
   prove that it does), and the resolved file is checked against what issue 6 asks for.
2. Each Python service's resolved `command` and `environment` are run as local processes, with
   only what cannot be the same outside Docker substituted (host names, ports, the `python`
   path), three workers included; a batch of jobs must then complete once each, across all
   three workers.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.support.certificates import Authority
from tests.support.processes import ROOT, Process, free_port
from tests.support.s3 import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    bucket_with_the_sample_advert,
    moto_server,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKER_COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
ENV = shutil.which("env") or "/usr/bin/env"

PYTHON_SERVICES = ("queue", "gateway", "worker")
# The secrets of .env.example: each must reach the services only through a ${...} reference.
SECRETS = (
    "POSTGRES_PASSWORD",
    "QUEUE_WORKER_TOKEN",
    "QUEUE_ADMIN_TOKEN",
    "ADMIN_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "GRAFANA_ADMIN_PASSWORD",
)
# Empty in .env.example, and compose refuses to start until each is set (closed by default).
REQUIRED_SECRETS = (*SECRETS[:4], "GRAFANA_ADMIN_PASSWORD")
QUEUE_PORT_OVERRIDE = ROOT / "docker-compose.queue-port.yml"
TLS_OVERRIDE = ROOT / "docker-compose.tls.yml"
CERTS_MOUNT = "/certs"
WORKERS = 3

Config = dict[str, Any]


# -- docker-compose ----------------------------------------------------------------------------


def docker_compose(
    env_file: Path, *args: str, compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    """`docker-compose --env-file ENV -f FILE ARGS...` from the repository, as an operator runs it.

    The shell environment takes precedence over the env file in compose's interpolation, so
    only PATH and HOME are passed: a QUEUE_AUTH_TOKEN or ADMIN_API_KEY exported where the tests
    run must not change what the file resolves to.
    """
    if not Path(DOCKER_COMPOSE).exists():
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    return subprocess.run(
        [
            DOCKER_COMPOSE,
            # Mutated copies live in tmp_path; `build: .` must still mean the repository.
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "-f",
            str(compose_file),
            *args,
        ],
        cwd=ROOT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home())},
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolve(env_file: Path) -> Config:
    """The compose file as `docker-compose config` resolves it: anchors merged, ${...} filled."""
    result = docker_compose(env_file, "config")
    assert result.returncode == 0, result.stderr
    resolved: Config = yaml.safe_load(result.stdout)
    return resolved


def env_file_with(folder: Path, **values: str) -> Path:
    """A copy of .env.example with some values replaced (the .env an operator would write)."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    pending = dict(values)
    for index, line in enumerate(lines):
        name = line.partition("=")[0].strip()
        if not line.lstrip().startswith("#") and name in pending:
            lines[index] = f"{name}={pending.pop(name)}"
    assert not pending, f"not in .env.example: {sorted(pending)}"
    path = folder / f"env-{uuid.uuid4().hex[:8]}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def env_example_names() -> list[str]:
    names = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            names.append(line.partition("=")[0].strip())
    return names


def seconds(duration: str) -> float:
    """A compose duration ("5s", "1m30s", "500ms") in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def secrets_set() -> dict[str, str]:
    """What a new user sets after `cp .env.example .env`: a fresh `openssl rand -hex 32` each."""
    return {name: uuid.uuid4().hex + uuid.uuid4().hex for name in REQUIRED_SECRETS}


@pytest.fixture(scope="module")
def example_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.env.example with its required secrets set and nothing else changed."""
    return env_file_with(tmp_path_factory.mktemp("compose"), **secrets_set())


@pytest.fixture(scope="module")
def resolved(example_env: Path) -> Config:
    return resolve(example_env)


# -- 1. validation -------------------------------------------------------------------------------


def test_the_compose_file_is_valid(example_env: Path) -> None:
    result = docker_compose(example_env, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def _mutated_copy(tmp_path: Path, mutate: Callable[[Config], None]) -> Path:
    document: Config = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    mutate(document)
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_a_round_tripped_copy_is_still_valid(tmp_path: Path, example_env: Path) -> None:
    """The negative controls below rewrite the file through PyYAML: that alone must not break
    it, or their failures would prove nothing about the mutation."""
    copy_path = _mutated_copy(tmp_path, lambda document: None)
    result = docker_compose(example_env, "config", "-q", compose_file=copy_path)
    assert result.returncode == 0, result.stderr


def _set(service: str, *path_and_value: Any) -> Callable[[Config], None]:
    *path, key, value = path_and_value

    def mutate(document: Config) -> None:
        node = document["services"][service]
        for step in path:
            node = node[step]
        node[key] = copy.deepcopy(value)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(
            _set("worker", "replicaz", 8),
            r"Unsupported config option for services\.worker: 'replicaz'",
            id="unknown-key",
        ),
        pytest.param(
            _set("gateway", "ports", 3000),
            r"services\.gateway\.ports contains an invalid type, it should be an array",
            id="ports-scalar",
        ),
        pytest.param(
            _set("queue", "healthcheck", "interval", [5]),
            r"services\.queue\.healthcheck\.interval contains an invalid type",
            id="healthcheck-interval-list",
        ),
        pytest.param(
            _set("worker", "depends_on", {"queu": {"condition": "service_healthy"}}),
            r"Service 'worker' depends on service 'queu' which is undefined",
            id="undefined-service",
        ),
        pytest.param(
            _set("gateway", "depends_on", "queue", "condition", "service_ready"),
            r"services\.gateway\.depends_on\.queue\.condition contains \"service_ready\"",
            id="unknown-condition",
        ),
    ],
)
def test_the_validator_catches_what_it_must(
    tmp_path: Path, example_env: Path, mutate: Callable[[Config], None], message: str
) -> None:
    """Negative controls: without them a passing `config -q` could mean the check checks nothing."""
    result = docker_compose(
        example_env, "config", "-q", compose_file=_mutated_copy(tmp_path, mutate)
    )
    assert result.returncode != 0, f"accepted:\n{result.stdout}"
    assert re.search(message, result.stderr), result.stderr


def test_a_missing_required_secret_stops_compose(tmp_path: Path, example_env: Path) -> None:
    """`${ADMIN_API_KEY:?...}`: an .env without the key fails at once, naming it, instead of
    starting a gateway that nobody can use."""
    text = example_env.read_text(encoding="utf-8")
    env_file = tmp_path / ".env"
    env_file.write_text(re.sub(r"(?m)^ADMIN_API_KEY=.*\n", "", text), encoding="utf-8")
    result = docker_compose(env_file, "config", "-q")
    assert result.returncode != 0
    assert "set ADMIN_API_KEY in .env" in result.stderr, result.stderr


def test_the_shipped_env_example_does_not_start_until_secrets_are_set(tmp_path: Path) -> None:
    """Closed by default: `cp .env.example .env && docker compose up` fails, naming a secret."""
    path = tmp_path / ".env"
    shutil.copyfile(ENV_EXAMPLE, path)
    result = docker_compose(path, "config", "-q")
    assert result.returncode != 0
    assert re.search(r"set (\w+) in \.env", result.stderr), result.stderr


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_each_secret_is_required(tmp_path: Path, secret: str) -> None:
    """Every other secret set, this one left empty as .env.example ships it: compose names it."""
    values = {name: value for name, value in secrets_set().items() if name != secret}
    result = docker_compose(env_file_with(tmp_path, **values), "config", "-q")
    assert result.returncode != 0
    assert f"set {secret} in .env" in result.stderr, result.stderr


# -- 1. what the resolved file must say -----------------------------------------------------------


def test_the_services(resolved: Config) -> None:
    """The system; Prometheus and Grafana only with `--profile monitoring`
    (tests/e2e/test_monitoring_compose.py)."""
    services = resolved["services"]
    always = {name for name, service in services.items() if not service.get("profiles")}
    assert always == {"postgres", "queue", "gateway", "worker"}
    assert set(services) - always == {"prometheus", "grafana"}


def test_the_worker_scales(resolved: Config) -> None:
    """`docker compose up --scale worker=8` fails on a fixed container name or host port."""
    worker = resolved["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "healthcheck" not in worker


def test_healthchecks(resolved: Config) -> None:
    services = resolved["services"]
    queue_test = services["queue"]["healthcheck"]["test"]
    assert queue_test[:4] == ["CMD", "python", "-m", "queue_service.healthcheck"], queue_test
    listen_port = services["queue"]["environment"]["QUEUE_LISTEN"].rpartition(":")[2]
    assert queue_test[4:] == [f"127.0.0.1:{listen_port}"]

    gateway_test = services["gateway"]["healthcheck"]["test"]
    gateway_port = services["gateway"]["environment"]["GATEWAY_PORT"]
    assert gateway_test[:2] == ["CMD", "python"], gateway_test
    assert f"http://127.0.0.1:{gateway_port}/healthz" in " ".join(gateway_test)

    assert services["postgres"]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")


def test_depends_on_waits_for_health(resolved: Config) -> None:
    services = resolved["services"]
    expected = {"queue": "postgres", "gateway": "queue", "worker": "queue"}
    for service, dependency in expected.items():
        assert services[service]["depends_on"] == {dependency: {"condition": "service_healthy"}}, (
            service
        )


def test_one_image_for_the_python_services(resolved: Config) -> None:
    services = resolved["services"]
    builds = {json.dumps(services[name]["build"], sort_keys=True) for name in PYTHON_SERVICES}
    images = {services[name]["image"] for name in PYTHON_SERVICES}
    assert builds == {json.dumps({"context": str(ROOT)})}
    assert len(images) == 1


def test_the_services_find_each_other(resolved: Config) -> None:
    services = resolved["services"]
    queue_env = services["queue"]["environment"]
    listen_port = queue_env["QUEUE_LISTEN"].rpartition(":")[2]
    assert queue_env["QUEUE_LISTEN"] == f"0.0.0.0:{listen_port}"
    for client in ("gateway", "worker"):
        assert services[client]["environment"]["QUEUE_ADDR"] == f"queue:{listen_port}"
    gateway_port = int(services["gateway"]["environment"]["GATEWAY_PORT"])
    assert [p["target"] for p in services["gateway"]["ports"]] == [gateway_port]

    postgres = services["postgres"]["environment"]
    url = re.fullmatch(r"postgresql://postgres:(.*)@postgres:5432/(\w+)", queue_env["DATABASE_URL"])
    assert url, queue_env["DATABASE_URL"]
    assert url.groups() == (postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])


def test_the_queue_port_is_published_only_when_asked(resolved: Config, example_env: Path) -> None:
    """Only the project's containers reach the gRPC API by default; the override publishes it,
    on loopback unless QUEUE_PUBLISH says otherwise."""
    assert "ports" not in resolved["services"]["queue"]
    result = docker_compose(
        example_env, "-f", str(QUEUE_PORT_OVERRIDE), "config", compose_file=COMPOSE_FILE
    )
    assert result.returncode == 0, result.stderr
    queue = yaml.safe_load(result.stdout)["services"]["queue"]
    listen_port = queue["environment"]["QUEUE_LISTEN"].rpartition(":")[2]
    # docker-compose 1.29 writes a port with a host address in its short form.
    assert queue["ports"] == [f"127.0.0.1:50051:{listen_port}/tcp"]


def test_secrets_come_from_the_env_file(tmp_path: Path) -> None:
    """Resolve with fresh random secrets: each must land where it is used, and none of the
    file's own text may carry a literal secret."""
    secrets = {name: f"s{uuid.uuid4().hex}" for name in SECRETS}
    services = resolve(env_file_with(tmp_path, **secrets))["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == secrets["POSTGRES_PASSWORD"]
    assert f":{secrets['POSTGRES_PASSWORD']}@" in services["queue"]["environment"]["DATABASE_URL"]
    # Each role's token reaches the queue service and that role's clients only.
    queue_env = services["queue"]["environment"]
    for role, client in (("QUEUE_WORKER_TOKEN", "worker"), ("QUEUE_ADMIN_TOKEN", "gateway")):
        assert queue_env[role] == services[client]["environment"][role] == secrets[role]
    assert "QUEUE_ADMIN_TOKEN" not in services["worker"]["environment"]
    assert "QUEUE_WORKER_TOKEN" not in services["gateway"]["environment"]
    for name in PYTHON_SERVICES:
        assert "QUEUE_AUTH_TOKEN" not in services[name]["environment"]
    assert services["gateway"]["environment"]["ADMIN_API_KEY"] == secrets["ADMIN_API_KEY"]
    assert (
        services["worker"]["environment"]["AWS_SECRET_ACCESS_KEY"]
        == secrets["AWS_SECRET_ACCESS_KEY"]
    )

    raw: Config = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    for service in raw["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if any(secret in name for secret in (*SECRETS, "OPENAI_API_KEY", "ACCESS_KEY")):
                assert str(value).startswith("${"), f"{name} is hard-coded: {value!r}"


def test_every_env_example_variable_is_used() -> None:
    """A variable in .env.example that the compose file never reads is a setting that silently
    does nothing."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    unused = [name for name in env_example_names() if "${" + name not in text]
    assert not unused, f"in .env.example but not used by docker-compose.yml: {unused}"


def test_the_worker_region_reaches_boto3(tmp_path: Path) -> None:
    # Whichever spelling .env.example uses, so that fixing either file makes this test pass.
    name = next(n for n in env_example_names() if re.fullmatch(r"AWS(_DEFAULT)?_REGION", n))
    worker = resolve(env_file_with(tmp_path, **secrets_set(), **{name: "eu-west-2"}))["services"][
        "worker"
    ]
    region = subprocess.run(
        [
            ENV,
            "-i",
            *(f"{name}={value}" for name, value in worker["environment"].items()),
            sys.executable,
            "-c",
            "import boto3; print(boto3.session.Session().region_name)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert region.stdout.strip() == "eu-west-2", region.stderr


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _local_imports(package: str, local: set[str]) -> set[str]:
    """The repository's top-level packages that `package` imports, transitively."""
    found = {package}
    pending = [package]
    while pending:
        for source in (ROOT / pending.pop()).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                for name in names:
                    top = name.partition(".")[0]
                    if top in local and top not in found:
                        found.add(top)
                        pending.append(top)
    return found


def test_the_dockerfile_carries_what_the_services_run(resolved: Config) -> None:
    instructions = _dockerfile_instructions()
    workdir = next(rest for keyword, rest in instructions if keyword == "WORKDIR")
    copied = {
        shlex.split(rest)[0]
        for keyword, rest in instructions
        if keyword == "COPY" and len(shlex.split(rest)) == 2
    }
    local = {path.name for path in ROOT.iterdir() if (path / "__init__.py").exists()}
    needed = {"migrations"}
    for name in PYTHON_SERVICES:
        command = resolved["services"][name]["command"]
        assert command[:2] == ["python", "-m"], command
        needed |= _local_imports(command[2].partition(".")[0], local)
    assert needed == {"jobqueue", "queue_service", "worker_service", "gateway", "migrations"}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    assert f"MIGRATIONS_DIR={workdir}/migrations" in " ".join(
        rest for keyword, rest in instructions if keyword == "ENV"
    )


# -- 2. the compose services as local processes ---------------------------------------------------


def image_environment() -> dict[str, str]:
    """The Dockerfile's ENV values with its WORKDIR mapped to the repository, plus what the base
    image gives every process (PATH finds ffmpeg; HOME and LANG as in python:3.11-slim)."""
    instructions = _dockerfile_instructions()
    workdir = next(rest for keyword, rest in instructions if keyword == "WORKDIR")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home()), "LANG": "C.UTF-8"}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = (
                    value.replace(workdir, str(ROOT), 1) if value.startswith(workdir) else value
                )
    return env


class LocalStack:
    """Maps the compose network onto loopback: container addresses to free local ports."""

    def __init__(self, services: Config, database_url: str, certs: Path | None = None) -> None:
        self.services = services
        self.database_url = database_url
        # Where the TLS override's /certs volume is, here.
        self.certs = certs
        queue_port = services["queue"]["environment"]["QUEUE_LISTEN"].rpartition(":")[2]
        self.gateway_container_port = services["gateway"]["environment"]["GATEWAY_PORT"]
        self.queue_port = free_port()
        self.gateway_port = free_port()
        queue_local = f"127.0.0.1:{self.queue_port}"
        metrics = [
            services[name]["environment"][variable]
            for name, variable in (
                ("queue", "QUEUE_METRICS_LISTEN"),
                ("worker", "WORKER_METRICS_LISTEN"),
            )
        ]
        self._addresses = {
            # Any free port: the three workers share one environment here, not one host each.
            **{address: "127.0.0.1:0" for address in metrics},
            f"queue:{queue_port}": queue_local,
            f"0.0.0.0:{queue_port}": queue_local,
            f"127.0.0.1:{queue_port}": queue_local,
            f"127.0.0.1:{self.gateway_container_port}": f"127.0.0.1:{self.gateway_port}",
        }
        self._pattern = re.compile("|".join(map(re.escape, self._addresses)))

    def _local(self, value: str) -> str:
        return self._pattern.sub(lambda match: self._addresses[match.group(0)], value)

    def argv(self, args: list[str]) -> list[str]:
        """A compose command or healthcheck, runnable here: `python` is this interpreter."""
        local = [self._local(arg) for arg in args]
        return [sys.executable if local[0] == "python" else local[0], *local[1:]]

    def environment(self, service: str) -> dict[str, str]:
        compose_env = {k: str(v) for k, v in self.services[service]["environment"].items()}
        env = {name: self._local(value) for name, value in compose_env.items()}
        if "DATABASE_URL" in env:
            env["DATABASE_URL"] = self.database_url
        if "GATEWAY_PORT" in env:
            env["GATEWAY_PORT"] = str(self.gateway_port)
        mounted = set()
        if self.certs is not None:
            for name, value in env.items():
                if value.startswith(f"{CERTS_MOUNT}/"):
                    env[name] = str(self.certs / value.removeprefix(f"{CERTS_MOUNT}/"))
                    mounted.add(name)
        changed = {name for name in env if env[name] != compose_env[name]}
        # Only the addresses (and the mounted certificates' paths) may differ from the compose
        # file; every other value is its own.
        allowed = {"DATABASE_URL", "QUEUE_LISTEN", "QUEUE_ADDR", "GATEWAY_PORT", *mounted}
        allowed |= {"QUEUE_METRICS_LISTEN", "WORKER_METRICS_LISTEN"}
        assert changed <= allowed, changed
        assert not re.search(r"\b(postgres|queue):\d", " ".join(env.values())), env
        return {**image_environment(), **env}

    def process(self, service: str, name: str = "") -> Process:
        """The service's exact command in exactly its environment (`env -i`: nothing inherited
        from the test run, as in a container)."""
        env = self.environment(service)
        command = self.argv(self.services[service]["command"])
        return Process(
            [ENV, "-i", *(f"{k}={v}" for k, v in env.items()), *command], name=name or service
        )

    def wait_healthy(self, service: str, process: Process) -> None:
        """Run the service's own healthcheck until it passes, within the time Docker would give
        it (start_period + interval * retries) before marking it unhealthy."""
        check = self.services[service]["healthcheck"]
        assert check["test"][0] == "CMD", check["test"]
        argv = self.argv(check["test"][1:])
        env = self.environment(service)
        timeout = seconds(check["timeout"])
        allowed = (
            seconds(check.get("start_period", "0s")) + seconds(check["interval"]) * check["retries"]
        )
        last = ""

        def healthy() -> bool:
            nonlocal last
            assert process.popen.poll() is None, f"{service} exited; output:\n{process.output}"
            result = subprocess.run(
                [ENV, "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=timeout + 10,
            )
            last = result.stdout + result.stderr
            return result.returncode == 0

        # Docker re-runs the check every `interval`; checking sooner only ends the wait sooner.
        wait_for(
            healthy,
            timeout=allowed,
            what=lambda: f"{service} to become healthy: {last}\noutput:\n{process.output}",
            interval=0.3,
        )


def request(
    method: str, url: str, key: str, body: Mapping[str, Any] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-Admin-Key": key, "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture
def moto_s3() -> Iterator[str]:
    """A real S3-compatible server process (moto), as AWS_ENDPOINT_URL would name one."""
    with moto_server() as moto:
        yield f"http://127.0.0.1:{moto.port}"


def test_the_compose_services_run_as_local_processes(
    tmp_path: Path, moto_s3: str, empty_database: str
) -> None:
    # The operator's .env: .env.example with the object store filled in (moto's test keys).
    bucket = "tellyads-videos"
    env_file = env_file_with(
        tmp_path,
        **secrets_set(),
        S3_BUCKET=bucket,
        AWS_ENDPOINT_URL=moto_s3,
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
    )
    services = resolve(env_file)["services"]
    worker_env = services["worker"]["environment"]
    concurrency = int(worker_env["WORKER_CONCURRENCY"])
    region = worker_env.get("AWS_DEFAULT_REGION") or worker_env.get("AWS_REGION") or "us-east-1"
    # Each worker holds at most `concurrency` jobs and a run takes seconds, so with twice the
    # three workers' capacity queued at once, two workers cannot drain the queue before the
    # third's waiting Claim is answered: all three must take part.
    keys = [f"videos/advert-{i:02d}.mp4" for i in range(WORKERS * concurrency * 2)]
    bucket_with_the_sample_advert(moto_s3, bucket, keys, tmp_path / "media", region)

    stack = LocalStack(services, empty_database)
    admin_key = services["gateway"]["environment"]["ADMIN_API_KEY"]
    api = f"http://127.0.0.1:{stack.gateway_port}/api/ingest"
    with ExitStack() as cleanup:

        def running(process: Process) -> Process:
            # SIGTERM (then SIGKILL) however the test ends, so no process outlives it.
            cleanup.callback(process.stop)
            return process

        queue = running(stack.process("queue"))
        stack.wait_healthy("queue", queue)
        gateway = running(stack.process("gateway"))
        stack.wait_healthy("gateway", gateway)
        workers = [running(stack.process("worker", f"worker-{i}")) for i in range(WORKERS)]
        worker_ids = [w.wait_for_line(r"^Worker ID: (\S+)$", timeout=90).group(1) for w in workers]
        for worker in workers:
            worker.wait_for_line(r"^Worker ready", timeout=90)
        everything = _outputs(queue, gateway, *workers)

        job_ids: dict[str, str] = {}
        for key in keys:
            status, body = request(
                "POST", f"{api}/enqueue", admin_key, {"source_type": "s3", "s3_key": key}
            )
            assert status == 201 and body["status"] == "QUEUED", (status, body)
            job_ids[body["job_id"]] = key

        jobs = _wait_until_finished(api, admin_key, set(job_ids), everything, deadline=150)
        failed = {job["id"]: job for job in jobs.values() if job["status"] != "SUCCEEDED"}
        assert not failed, f"{json.dumps(failed, indent=1)}\n{everything()}"

        # Processed once: one attempt each, no recorded error, one Processing line in all outputs.
        for job in jobs.values():
            assert (job["attempts"], job["errors"]) == (1, []), (job, everything())
            assert job["input"] == {"source_type": "s3", "s3_key": job_ids[job["id"]]}
        processing = [
            line for w in workers for line in w.lines if line.startswith("Processing job ")
        ]
        assert sorted(line.split()[2].rstrip(".") for line in processing) == sorted(
            job_id[:8] for job_id in job_ids
        ), everything()

        owners = {job["locked_by"] for job in jobs.values()}
        assert owners == set(worker_ids), (owners, worker_ids, everything())

        # One advert per source, each stored by the job that names it.
        with psycopg.connect(empty_database) as db:
            adverts = db.execute(
                "SELECT source_key, id::text, job_id::text FROM adverts"
            ).fetchall()
        assert sorted(source for source, _, _ in adverts) == sorted(f"s3:{key}" for key in keys)
        by_job = {job_id: (source, ad_id) for source, ad_id, job_id in adverts}
        for job in jobs.values():
            assert by_job[job["id"]] == (f"s3:{job_ids[job['id']]}", job["output"]["ad_id"])

        # docker stop: SIGTERM, and the worker exits 0 having counted its own share.
        total = 0
        for worker in workers:
            worker.signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=60) == 0, worker.output
            total += int(worker.wait_for_line(r"^Jobs succeeded: (\d+)$", timeout=5).group(1))
        assert total == len(keys), everything()
        # `docker compose down` stops the rest the same way: both shut down gracefully, within
        # the stop grace period, instead of being killed. uvicorn re-raises the SIGTERM it caught
        # once its shutdown is complete, so the gateway's clean exit is death by SIGTERM (143).
        assert gateway.stop(timeout=30) in (0, -signal.SIGTERM), everything()
        gateway.wait_for_line(r"Application shutdown complete", timeout=1)
        assert queue.stop(timeout=30) == 0, everything()


def _outputs(*processes: Process) -> Callable[[], str]:
    return lambda: "\n".join(f"--- {p.name}:\n{p.output}" for p in processes)


def _wait_until_finished(
    api: str, key: str, job_ids: set[str], outputs: Callable[[], str], deadline: float
) -> dict[str, dict[str, Any]]:
    """Poll the REST API until every job is in a final status (or one failed)."""
    jobs: dict[str, dict[str, Any]] = {}

    def finished() -> bool:
        nonlocal jobs
        status, body = request("GET", f"{api}/jobs?limit=500", key)
        assert status == 200, body
        jobs = {job["id"]: job for job in body["jobs"] if job["id"] in job_ids}
        statuses = {job["status"] for job in jobs.values()}
        done = len(jobs) == len(job_ids) and statuses <= {"SUCCEEDED", "FAILED", "CANCELLED"}
        # A job that failed once was not processed exactly once: report it now.
        return done or bool(statuses & {"RETRY", "FAILED"})

    def counts() -> str:
        by_status = Counter(job["status"] for job in jobs.values())
        return f"jobs to finish: {dict(by_status)}\n{outputs()}"

    wait_for(finished, timeout=deadline, what=counts, interval=0.5)
    return jobs


def test_the_compose_services_run_over_mutual_tls(tmp_path: Path, empty_database: str) -> None:
    """docker-compose.tls.yml with mutual TLS set in .env: the queue service's own healthcheck,
    the gateway and a worker all connect over TLS with their certificates, and the role tokens
    still decide what each may do. The job names a local file that does not exist, so it needs
    no object storage: the worker claims it and records the failure, each over mutual TLS."""
    certs = tmp_path / "certs"
    ca = Authority.create(certs, "compose")
    shutil.copyfile(ca.cert, certs / "ca.pem")
    for name, server in (("queue", True), ("gateway", False), ("worker", False)):
        issued = ca.issue(name, server=server, dns=("queue",) if server else ())
        shutil.copyfile(issued.cert, certs / f"{name}.pem")
        shutil.copyfile(issued.key, certs / f"{name}-key.pem")
    env_file = env_file_with(tmp_path, **secrets_set())
    with env_file.open("a", encoding="utf-8") as extra:
        extra.write(
            f"TLS_DIR={certs}\n"
            f"QUEUE_TLS_CLIENT_CA_FILE={CERTS_MOUNT}/ca.pem\n"
            f"GATEWAY_TLS_CERT_FILE={CERTS_MOUNT}/gateway.pem\n"
            f"GATEWAY_TLS_KEY_FILE={CERTS_MOUNT}/gateway-key.pem\n"
            f"WORKER_TLS_CERT_FILE={CERTS_MOUNT}/worker.pem\n"
            f"WORKER_TLS_KEY_FILE={CERTS_MOUNT}/worker-key.pem\n"
        )
    result = docker_compose(env_file, "-f", str(TLS_OVERRIDE), "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in PYTHON_SERVICES:
        volumes = services[name]["volumes"]
        # docker-compose 1.29 writes a volume in its short form.
        assert volumes == [f"{certs}:{CERTS_MOUNT}:ro"], volumes
        assert services[name]["environment"]["QUEUE_TLS_CA_FILE"] == f"{CERTS_MOUNT}/ca.pem"

    stack = LocalStack(services, empty_database, certs=certs)
    admin_key = services["gateway"]["environment"]["ADMIN_API_KEY"]
    api = f"http://127.0.0.1:{stack.gateway_port}/api/ingest"
    with ExitStack() as cleanup:

        def running(process: Process) -> Process:
            cleanup.callback(process.stop)
            return process

        queue = running(stack.process("queue"))
        stack.wait_healthy("queue", queue)
        gateway = running(stack.process("gateway"))
        stack.wait_healthy("gateway", gateway)
        worker = running(stack.process("worker"))
        worker.wait_for_line(r"^Worker ready", timeout=90)
        everything = _outputs(queue, gateway, worker)

        status, body = request(
            "POST", f"{api}/enqueue", admin_key, {"source_type": "s3", "s3_key": ""}
        )
        assert status == 400, body  # the gateway's own check, before any gRPC
        status, body = request(
            "POST",
            f"{api}/enqueue",
            admin_key,
            {"source_type": "local", "path": "/nonexistent.mp4"},
        )
        assert status == 201, (status, body)
        job_id = body["job_id"]
        jobs = _wait_until_finished(api, admin_key, {job_id}, everything, deadline=60)
        job = jobs[job_id]
        # Claimed, then failed by the worker (Fail is a worker-role call), over mutual TLS.
        assert job["locked_by"] and job["status"] in ("RETRY", "FAILED"), (job, everything())
        assert job["errors"] and job["errors"][0]["code"], job
        status, shown = request("GET", f"{api}/jobs/{job_id}", admin_key)
        assert status == 200
        assert [(e["action"], e["credential"]) for e in shown["job"]["audit_trail"]] == [
            ("enqueue", "QUEUE_ADMIN_TOKEN")
        ], shown
