"""The container image, Compose file and Kubernetes manifests in the repository agree with the
gateway and with each other, and what they run works.

There is no Docker daemon or cluster in CI, so the image is not built here. Instead: the
Dockerfile's entrypoint, environment and shipped config are run as the container would run
them (with the host and port moved to a free loopback port), on embedded state and on the
Compose file's PostgreSQL + Redis environment, and answer the official OpenAI client and the
image's own health check; the manifests are read and checked against the gateway's routes,
its environment variables and the image.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from llmport.config import load_config
from tests.support.databases import REDIS_URL, delete_prefixed, fresh_postgres, redis_or_skip
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MASTER_KEY = "sk-deploy-test-master-key"


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the final stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), arguments.strip()))
    return stages[-1]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in dockerfile():
        if instruction == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def entrypoint() -> list[str]:
    [arguments] = [a for i, a in dockerfile() if i == "ENTRYPOINT"]
    return list(yaml.safe_load(arguments))  # JSON exec form


def image_port() -> int:
    [port] = [int(a) for i, a in dockerfile() if i == "EXPOSE"]
    return port


def kubernetes() -> dict[str, dict[str, Any]]:
    documents = yaml.safe_load_all((DEPLOY / "kubernetes" / "llmport.yaml").read_text())
    return {doc["kind"]: doc for doc in documents if doc}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())


class Container:
    """The image's entrypoint as a local process: its ENV (paths mapped into the checkout),
    plus ``env``; ``--host``/``--port`` moved to a free loopback port."""

    def __init__(self, tmp_path: Path, env: dict[str, str], config: Path) -> None:
        self.port = free_port()
        command = entrypoint()
        command[command.index("--host") + 1] = "127.0.0.1"  # tests stay on loopback
        command[command.index("--port") + 1] = str(self.port)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LLMPORT_")}
        environment.update(image_env())
        environment.update(LLMPORT_CONFIG=str(config), LLMPORT_DATA_DIR=str(tmp_path / "data"),
                           PATH=f"{Path(sys.executable).parent}:{environment.get('PATH', '')}",
                           **env)
        self.log = (tmp_path / "container.log").open("wb")
        self.process = subprocess.Popen(command, env=environment, stdout=self.log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> dict[str, Any]:
        with httpx.Client(timeout=2) as client:
            for _ in range(300):
                assert self.process.poll() is None, Path(self.log.name).read_text()
                try:
                    response = client.get(self.url + "/readyz")
                    if response.status_code == 200:
                        return dict(response.json())
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise AssertionError("not ready in 30 s: " + Path(self.log.name).read_text())

    def health_check(self) -> int:
        """The image's HEALTHCHECK command, against this process."""
        [arguments] = [a for i, a in dockerfile() if i == "HEALTHCHECK"]
        command = list(yaml.safe_load(arguments.split(" CMD ", 1)[1]))
        command = [c.replace(f"127.0.0.1:{image_port()}", f"127.0.0.1:{self.port}")
                   for c in command]
        assert command[0] == "python"
        return subprocess.run([sys.executable, *command[1:]], timeout=10).returncode

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(40)
        self.log.close()
        return code


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Any]:
    started: list[Container] = []

    def start(env: dict[str, str], config: Path) -> Container:
        started.append(Container(tmp_path, env, config))
        return started[-1]

    yield start
    for process in started:
        if process.process.poll() is None:
            process.stop()


def chat(url: str) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0)
    completion = client.chat.completions.create(
        model="llmport-demo", messages=[{"role": "user", "content": "Hello from a container"}])
    return completion.choices[0].message.content or ""


def test_the_image_runs_its_shipped_config_on_embedded_state(container: Any) -> None:
    gateway = container({"LLMPORT_MASTER_KEY": MASTER_KEY}, DEPLOY / "docker" / "llmport.yaml")
    ready = gateway.wait_ready()
    assert ready["status"] == "ready"
    assert gateway.health_check() == 0
    assert chat(gateway.url)
    refused = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "llmport-demo"},
                         headers={"authorization": "Bearer sk-wrong"})
    assert refused.status_code == 401  # the master key from the environment is in force
    assert httpx.get(gateway.url + "/metrics").status_code == 200
    assert gateway.stop() in (0, -15)
    assert gateway.health_check() != 0  # and the check notices a dead gateway


def test_the_compose_environment_runs_on_postgres_and_redis(container: Any,
                                                            tmp_path: Path) -> None:
    redis_or_skip()
    service = compose()["services"]["llmport"]
    environment = service["environment"]
    # The Compose file's variables, pointed at this machine's servers instead of its services.
    with fresh_postgres() as database_url:
        prefix = f"llmport-test:{os.urandom(6).hex()}:"
        config = yaml.safe_load((DEPLOY / "compose" / "llmport.yaml").read_text())
        config["redis_prefix"] = prefix  # the one change: keys this test owns and deletes
        path = tmp_path / "llmport.yaml"
        path.write_text(yaml.safe_dump(config))
        try:
            gateway = container({"LLMPORT_MASTER_KEY": MASTER_KEY,
                                 "LLMPORT_DATABASE_URL": database_url,
                                 "LLMPORT_REDIS_URL": REDIS_URL}, path)
            ready = gateway.wait_ready()
            assert ready["stores"] == {"store": True, "database": True}
            assert chat(gateway.url)
            assert gateway.stop() in (0, -15)
        finally:
            delete_prefixed(prefix)
    assert set(environment) >= {"LLMPORT_MASTER_KEY", "LLMPORT_DATABASE_URL",
                                "LLMPORT_REDIS_URL"}
    assert environment["LLMPORT_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in environment["LLMPORT_DATABASE_URL"]
    assert environment["LLMPORT_REDIS_URL"].startswith("redis://redis:6379/")


def test_dockerfile_copies_what_exists_and_runs_unprivileged() -> None:
    stage = dockerfile()
    env = image_env()
    assert entrypoint()[:2] == ["llmport", "serve"]
    assert entrypoint()[entrypoint().index("--port") + 1] == str(image_port())
    assert env["LLMPORT_CONFIG"] == "/etc/llmport/llmport.yaml"
    [user] = [a for i, a in stage if i == "USER"]
    assert user not in ("0", "root")
    for instruction, arguments in stage:
        if instruction == "COPY" and "--from=" not in arguments:
            source = arguments.split()[0]
            assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text()
    for needed in ("pyproject.toml", "README.md", "src/", "deploy/docker/"):
        assert f"!{needed}" in ignored
    load_config(DEPLOY / "docker" / "llmport.yaml", environ={"LLMPORT_MASTER_KEY": MASTER_KEY})


def test_compose_services_mounts_and_health_checks() -> None:
    services = compose()["services"]
    gateway = services["llmport"]
    assert gateway["build"]["dockerfile"] == "Dockerfile"
    assert (DEPLOY / "compose" / gateway["build"]["context"] / "Dockerfile").exists()
    assert any(port.endswith(f":{image_port()}") for port in gateway["ports"])
    for dependency, condition in gateway["depends_on"].items():
        assert condition == {"condition": "service_healthy"}
        assert "healthcheck" in services[dependency]
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / "compose" / source).exists(), (name, source)
    config = load_config(DEPLOY / "compose" / "llmport.yaml", environ={
        "LLMPORT_MASTER_KEY": MASTER_KEY, "LLMPORT_DATABASE_URL": "postgresql+asyncpg://u@h/d",
        "LLMPORT_REDIS_URL": "redis://h:6379/0"})
    assert config.database_url and config.redis_url  # multi-replica mode from the environment
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [
        f"llmport:{image_port()}"]  # the Compose service's name and the image's port


def test_kubernetes_manifests_match_the_image_and_the_gateway(tmp_path: Path) -> None:
    docs = kubernetes()
    deployment, service = docs["Deployment"], docs["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() \
        <= labels.items()
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == \
        deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    [main] = pod["containers"]
    assert main["ports"] == [{"name": "http", "containerPort": image_port()}]
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [user] = [a for i, a in dockerfile() if i == "USER"]
    assert pod["securityContext"]["runAsUser"] == int(user)
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    env = image_env()
    assert mounts["config"] == str(Path(env["LLMPORT_CONFIG"]).parent)
    assert mounts["data"] == env["LLMPORT_DATA_DIR"]
    # The Secret's keys become the variables the gateway reads, and the config loads with them.
    names = {e["name"] for e in main["env"]}
    assert names >= {"LLMPORT_MASTER_KEY", "LLMPORT_DATABASE_URL", "LLMPORT_REDIS_URL"}
    config_map = docs["ConfigMap"]["data"]
    assert list(config_map) == [Path(env["LLMPORT_CONFIG"]).name]
    path = tmp_path / "llmport.yaml"
    path.write_text(config_map["llmport.yaml"])
    config = load_config(path, environ={
        "LLMPORT_MASTER_KEY": MASTER_KEY, "LLMPORT_DATABASE_URL": "postgresql+asyncpg://u@h/d",
        "LLMPORT_REDIS_URL": "redis://h:6379/0"})
    assert config.redis_url and config.database_url
    assert config.model_names == ["llmport-demo"]
