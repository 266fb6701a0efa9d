"""deploy/: every file parses, validates against its schema offline, and cannot drift from the code.

The Kubernetes manifests are validated with kubernetes-validate (the upstream OpenAPI schemas, shipped
in the package, strict: unknown fields fail); the KEDA resources, whose CRD schemas it does not
ship, are checked field by field here. compose.yaml is validated against the compose-spec schema
that check-jsonschema ships, and redis.conf is loaded by a real redis-server when one is installed.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import arq.constants
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError
from redis.asyncio import Redis

from relay.settings import Settings
from tests.helpers import StartRelay, eventually

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "k8s"
# The settings that are a gateway's keys (relay.settings): every RELAY_<gateway>_* and the custom sources.
GATEWAY_PREFIXES = ("midtrans", "xendit", "tripay", "doku", "duitku", "custom")
# The oldest Kubernetes these manifests support, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
# Applied on their own, not by kustomization.yaml: the Secret's example, and what needs the
# Prometheus Operator.
NOT_KUSTOMIZED = {"kustomization.yaml", "secret.example.yaml", "monitoring.yaml"}
# Names that hold a secret: they may only come from the Secret, never from a literal or a ConfigMap.
SECRET_NAME = re.compile(r"REDIS_URL|TOKEN|_KEY$|KEYS$|SECRET|PASSWORD|CUSTOM_SOURCES")
RELAY_NAME = re.compile(r"\bRELAY_[A-Z0-9_]*[A-Z0-9]\b")
SECRET = "relay"


def documents(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def manifests() -> list[dict[str, Any]]:
    return [document for path in sorted(K8S.glob("*.yaml")) for document in documents(path)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [document for document in manifests() if document["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    [found] = [document for document in of_kind(kind) if document["metadata"]["name"] == name]
    return found


def example_secret() -> dict[str, str]:
    [secret] = documents(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == SECRET
    return dict(secret["stringData"])


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"])


def compose() -> dict[str, Any]:
    [found] = documents(DEPLOY / "compose.yaml")
    return dict(found)


def dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), flags=re.M)
    return int(users[-1].split(":")[0])


# --- every file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml")), ids=lambda path: path.name
)
def test_every_yaml_file_parses(path: Path) -> None:
    assert documents(path), f"{path} holds no YAML document"


def test_every_relay_setting_named_in_deploy_files_exists() -> None:
    """deploy/ cannot drift from the code: each RELAY_* it names is a field of Settings."""
    fields = {f"RELAY_{name.upper()}" for name in Settings.model_fields}
    named: dict[str, set[str]] = {}
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file():
            for name in RELAY_NAME.findall(path.read_text()):
                named.setdefault(name, set()).add(str(path.relative_to(DEPLOY)))
    assert {"RELAY_REDIS_URL", "RELAY_ADMIN_TOKEN", "RELAY_ENCRYPTION_KEYS"} <= set(named)
    unknown = {name: sorted(where) for name, where in named.items() if name not in fields}
    assert not unknown, f"not settings of relay.settings.Settings: {unknown}"


# --- Kubernetes ---------------------------------------------------------------------------------


def validated(manifest: dict[str, Any], version: str) -> bool:
    """Validate ``manifest`` strictly against Kubernetes ``version``'s schemas; False for a custom
    kind (its CRD's schema is not shipped: the tests below check those field by field)."""
    if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
        return False
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {where}: {error.message}")
    return True


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    assert sum(validated(manifest, version) for manifest in manifests()) >= 7


def test_kustomization_applies_every_manifest_but_the_example_secret() -> None:
    [kustomization] = documents(K8S / "kustomization.yaml")
    expected = {path.name for path in K8S.glob("*.yaml")} - NOT_KUSTOMIZED
    assert set(kustomization["resources"]) == expected


def kustomized() -> list[dict[str, Any]]:
    """What ``kubectl kustomize deploy/k8s`` builds (Debian's kubectl package; .ci/run installs it)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("no kubectl: apt-get install kubectl (.ci/run does)")
    built = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    return [document for document in yaml.safe_load_all(built.stdout) if document is not None]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_what_kustomize_builds_validates_strictly(version: str) -> None:
    built = kustomized()
    for manifest in built:
        assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "relay"
        validated(manifest, version)
    images = {
        container["image"]
        for manifest in built
        if manifest["kind"] == "Deployment"
        for container in pod_spec(manifest)["containers"]
    }
    assert images == {"registry.example.com/relay:0.1.0"}
    assert Counter(manifest["kind"] for manifest in built)["NetworkPolicy"] == 2


def test_network_policies_open_the_ports_the_pods_serve_on_only() -> None:
    for policy in of_kind("NetworkPolicy"):
        selected = policy["spec"]["podSelector"]["matchLabels"]
        [deployment] = [
            d for d in of_kind("Deployment") if d["spec"]["template"]["metadata"]["labels"] == selected
        ]
        named_ports = {
            port["name"] for container in pod_spec(deployment)["containers"] for port in container["ports"]
        }
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            assert {port["port"] for port in rule["ports"]} <= named_ports
    worker = one("NetworkPolicy", "relay-worker")["spec"]["ingress"]
    assert [rule["from"] for rule in worker] == [
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    ]


def test_the_service_monitor_scrapes_the_ingress_with_the_admin_token() -> None:
    [monitor, pods] = documents(K8S / "monitoring.yaml")
    assert (monitor["kind"], pods["kind"]) == ("ServiceMonitor", "PodMonitor")
    service = one("Service", "relay-ingress")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["authorization"]["credentials"] == {"name": SECRET, "key": "RELAY_ADMIN_TOKEN"}
    worker = one("Deployment", "relay-worker")
    assert pods["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    [pod_endpoint] = pods["spec"]["podMetricsEndpoints"]
    assert pod_endpoint["port"] == "metrics"


def test_the_expected_kinds_are_there() -> None:
    kinds = Counter(manifest["kind"] for manifest in manifests())
    assert kinds["Deployment"] == 2
    assert kinds["Service"] == 1
    assert kinds["PodDisruptionBudget"] == 2
    assert kinds["ScaledObject"] == 1
    assert kinds["TriggerAuthentication"] == 1
    assert kinds["HorizontalPodAutoscaler"] == 1
    assert kinds["ConfigMap"] == 1
    assert kinds["Secret"] == 1  # the example only
    assert kinds["NetworkPolicy"] == 2
    assert (kinds["ServiceMonitor"], kinds["PodMonitor"]) == (1, 1)


def test_each_deployment_has_a_disruption_budget_and_the_service_selects_the_ingress() -> None:
    deployments = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in of_kind("Deployment")
    }
    covered = set()
    for budget in of_kind("PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        matched = [name for name, labels in deployments.items() if selector.items() <= labels.items()]
        assert len(matched) == 1, f"{budget['metadata']['name']} selects {matched}"
        covered.update(matched)
        assert budget["spec"]["maxUnavailable"] == 1
    assert covered == set(deployments)

    service = one("Service", "relay-ingress")
    assert service["spec"]["selector"].items() <= deployments["relay-ingress"].items()
    assert service["spec"]["selector"].items() > set()
    [container] = pod_spec(one("Deployment", "relay-ingress"))["containers"]
    port_names = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names


@pytest.mark.parametrize("name", ["relay-ingress", "relay-worker"])
def test_containers_run_as_non_root_with_resources_and_probes(name: str) -> None:
    spec = pod_spec(one("Deployment", name))
    assert spec["automountServiceAccountToken"] is False
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == dockerfile_uid() != 0
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    for container in spec["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}: {bound}"
        ports = {port["name"] for port in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            check = container[probe]["httpGet"]
            assert check["port"] in ports
            assert check["path"] in {"/healthz", "/readyz"}
        # Liveness never depends on Redis: a Redis outage must not restart every pod.
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_ingress_is_ready_when_redis_answers_and_serves_relay() -> None:
    [container] = pod_spec(one("Deployment", "relay-ingress"))["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["command"][:2] == ["relay", "serve"]
    [worker] = pod_spec(one("Deployment", "relay-worker"))["containers"]
    assert worker["command"] == ["relay", "worker"]
    config = one("ConfigMap", "relay-config")["data"]
    assert {port["containerPort"] for port in worker["ports"]} == {int(config["RELAY_WORKER_METRICS_PORT"])}


def test_the_worker_has_the_ingress_gateway_keys() -> None:
    """The worker invoices subscriptions' renewals: with other gateway keys than the ingress's it
    would decide otherwise whether the sandbox runs (and link renewals to a checkout the ingress
    does not serve)."""
    [ingress] = pod_spec(one("Deployment", "relay-ingress"))["containers"]
    [worker] = pod_spec(one("Deployment", "relay-worker"))["containers"]

    def gateway_keys(container: dict[str, Any]) -> dict[str, Any]:
        gateway = {name for name in Settings.model_fields if name.split("_")[0] in GATEWAY_PREFIXES}
        return {
            entry["name"]: entry["valueFrom"]
            for entry in container["env"]
            if entry["name"].removeprefix("RELAY_").lower() in gateway
        }

    assert "RELAY_MIDTRANS_SERVER_KEY" in gateway_keys(ingress)
    assert gateway_keys(worker) == gateway_keys(ingress)


def test_secrets_come_only_from_the_secret() -> None:
    keys = example_secret()
    config = one("ConfigMap", "relay-config")["data"]
    assert not [name for name in config if SECRET_NAME.search(name)], "a secret in the ConfigMap"
    for deployment in of_kind("Deployment"):
        for container in pod_spec(deployment)["containers"]:
            assert {"configMapRef": {"name": "relay-config"}} in container["envFrom"]
            for variable in container.get("env", []):
                name = variable["name"]
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if SECRET_NAME.search(name):
                    assert reference is not None, f"{name} is not from a Secret"
                    assert "value" not in variable
                if reference is not None:
                    assert reference["name"] == SECRET
                    assert reference["key"] in keys, f"{reference['key']} is not in secret.example.yaml"
    # Production never runs the sandbox checkout: the Midtrans key is required, not optional.
    [ingress] = pod_spec(one("Deployment", "relay-ingress"))["containers"]
    midtrans = next(v for v in ingress["env"] if v["name"] == "RELAY_MIDTRANS_SERVER_KEY")
    assert midtrans["valueFrom"]["secretKeyRef"].get("optional", False) is False


def test_the_example_secret_fails_closed() -> None:
    """Applied by mistake, its placeholders stop relay at start instead of running with them."""
    keys = example_secret()
    for setting in ("admin_token", "encryption_keys"):
        with pytest.raises(ValidationError):
            Settings(**{setting: keys[f"RELAY_{setting.upper()}"]})


def test_keda_scales_the_workers_on_the_arq_queue() -> None:
    scaled = one("ScaledObject", "relay-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "relay-worker"
    assert "kind" not in scaled["scaleTargetRef"] or scaled["scaleTargetRef"]["kind"] == "Deployment"
    # Never scaled to zero: the sweeper runs inside the workers.
    assert 2 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    assert metadata["listName"] == arq.constants.default_queue_name
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA metadata values are strings"
    assert int(metadata["listLength"]) > 0
    assert int(metadata["databaseIndex"]) >= 0
    assert metadata["enableTLS"] in {"true", "false"}
    authentication = one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    keys = example_secret()
    parameters = {ref["parameter"]: ref for ref in authentication["spec"]["secretTargetRef"]}
    assert set(parameters) == {"address", "username", "password"}
    for ref in parameters.values():
        assert ref["name"] == SECRET
        assert ref["key"] in keys
    assert re.fullmatch(r"[\w.-]+:\d+", keys["REDIS_ADDRESS"])
    # The user and host the example RELAY_REDIS_URL names are the ones KEDA is given.
    url = urlsplit(keys["RELAY_REDIS_URL"])
    assert keys[parameters["username"]["key"]] == url.username
    assert keys[parameters["address"]["key"]] == f"{url.hostname}:{url.port}"


# --- compose, Prometheus, Redis -----------------------------------------------------------------


def test_compose_validates_against_the_compose_spec() -> None:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    schema = json.loads(text)
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(compose())]
    assert not errors


def test_compose_runs_redis_with_aof_an_ingress_and_two_workers() -> None:
    services = compose()["services"]
    redis = services["redis"]
    assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]
    assert "/usr/local/etc/redis/redis.conf" in redis["command"]
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "ports" not in redis, "Redis must not be published"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"] == ["relay", "worker"]
    assert services["ingress"]["command"][:2] == ["relay", "serve"]
    for name in ("ingress", "worker"):
        service = services[name]
        assert service["environment"]["RELAY_REDIS_URL"].startswith("redis://")
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["worker"]["environment"]["HEALTHCHECK_URL"].endswith(":9100/healthz")
    assert services["prometheus"]["profiles"] == ["metrics"]
    # Published on loopback only: a proxy in front decides what the internet reaches.
    assert services["ingress"]["ports"] == ["127.0.0.1:8080:8080"]
    # A memory limit, and maxmemory below it: a full Redis refuses writes (noeviction), never
    # meets the kernel's OOM killer.
    command = redis["command"]
    maxmemory = parse_size(command[command.index("--maxmemory") + 1])
    assert maxmemory <= parse_size(redis["mem_limit"]) * 0.7
    assert redis_conf()["maxmemory-policy"] == "noeviction"


def parse_size(text: str) -> int:
    """A size as Redis and compose write it ("1gb", "1536m") in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", text.lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def test_compose_secrets_come_from_the_env_file() -> None:
    """No literal secret in compose.yaml: only ${...} interpolations from deploy/.env."""
    text = (DEPLOY / "compose.yaml").read_text()
    assert "${REDIS_PASSWORD:?" in text
    for service in compose()["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(name):
                assert "${" in str(value), f"{name} is a literal"
    example = (DEPLOY / "env.example").read_text()
    assert re.search(r"^REDIS_PASSWORD=$", example, flags=re.M)
    assert re.search(r"^RELAY_ADMIN_TOKEN=$", example, flags=re.M)
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


def test_prometheus_scrapes_the_ingress_and_every_worker() -> None:
    [config] = documents(DEPLOY / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["relay-ingress"]["static_configs"][0]["targets"] == ["ingress:8080"]
    [workers] = jobs["relay-worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"]
    assert workers["port"] == 9100


def redis_conf() -> dict[str, str]:
    found = {}
    for line in (DEPLOY / "redis.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            found[key] = value
    return found


def test_redis_conf_persists_every_acknowledged_write() -> None:
    conf = redis_conf()
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["no-appendfsync-on-rewrite"] == "no"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["protected-mode"] == "yes"
    assert "requirepass" not in conf, "the password stays out of the file"


async def test_redis_server_accepts_redis_conf(tmp_path: Path) -> None:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    socket = tmp_path / "redis.sock"
    process = await asyncio.create_subprocess_exec(
        server,
        str(DEPLOY / "redis.conf"),
        "--port",
        "0",
        "--unixsocket",
        str(socket),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    client = Redis(unix_socket_path=str(socket), decode_responses=True)
    try:

        async def answers() -> bool:
            if process.returncode is not None:
                output = await process.stdout.read() if process.stdout else b""
                pytest.fail(f"redis-server refused redis.conf: {output.decode()[-2000:]}")
            return socket.exists()

        await eventually(answers, what="redis-server with deploy/redis.conf")
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
        assert await client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert await client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        await client.set("relay:probe", "1")
        assert (tmp_path / "appendonlydir").is_dir()
    finally:
        await client.aclose()
        if process.returncode is None:
            process.terminate()
        await process.wait()


# --- the image ----------------------------------------------------------------------------------


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_the_image_is_slim_non_root_and_checks_its_health() -> None:
    text = dockerfile()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, flags=re.M)
    assert re.findall(r"^FROM \$\{PYTHON_IMAGE\}", text, flags=re.M), "every stage is the slim image"
    assert 0 < dockerfile_uid() != 0
    assert re.search(r"^RUN /opt/relay/bin/pip install \.", text, flags=re.M)
    assert "curl" not in text.replace("# The slim image has no curl", "")
    command = re.search(r"^CMD (\[.*\])$", text, flags=re.M)
    assert command
    everywhere = "0.0.0.0"  # noqa: S104 - the container's own interfaces, published by its runtime
    assert json.loads(command[1]) == ["relay", "serve", "--host", everywhere, "--port", "8080"]
    assert "ENV HEALTHCHECK_URL" in text or "HEALTHCHECK_URL=http://127.0.0.1:8080/healthz" in text


def healthcheck_command() -> list[str]:
    joined = dockerfile().replace("\\\n", " ")  # continuation lines
    found = re.search(r"^HEALTHCHECK .* CMD (\[.*\])$", joined, flags=re.M)
    assert found, "no HEALTHCHECK ... CMD [...]"
    command: list[str] = json.loads(found[1])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


async def run_healthcheck(url: str) -> int:
    process = await asyncio.create_subprocess_exec(
        *healthcheck_command(),
        env={"HEALTHCHECK_URL": url},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=20)


async def test_the_healthcheck_passes_on_a_serving_relay_and_fails_without_one(
    start_relay: StartRelay,
) -> None:
    running = await start_relay(worker=False)
    assert await run_healthcheck(f"{running.url}/healthz") == 0
    assert await run_healthcheck(f"{running.url}/no-such-route") != 0
    await running.relay.stop()
    assert await run_healthcheck(f"{running.url}/healthz") != 0


def test_the_build_context_is_the_package_only() -> None:
    rules = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for sources in re.findall(r"^COPY (?!--from)(.+)$", dockerfile(), flags=re.M):
        copied.update(part.rstrip("/") for part in sources.split()[:-1])
    assert copied == included == {"pyproject.toml", "README.md", "relay", "workers"}
