"""deploy/: every file parses, validates against its schema offline, and cannot drift from the code.

The Kubernetes manifests are validated with kubernetes-validate (the upstream OpenAPI schemas, shipped
in the package, strict: unknown fields fail); the KEDA resources, whose CRD schemas it does not
ship, are checked field by field here, and so is the optional Sentinel component (k8s/sentinel/),
built into an overlay as its users would. compose.yaml and compose.sentinel.yaml are validated against
the compose-spec schema that check-jsonschema ships; redis.conf is loaded by a real redis-server, and
compose.sentinel.yaml's Redis nodes and Sentinels are booted by it on loopback and made to fail over.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
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
from redis.exceptions import AuthenticationError, ReadOnlyError, RedisError

from relay.connections import open_connections
from relay.errors import StoreUnavailable
from relay.replicas import Replicas
from relay.settings import Settings
from tests.helpers import StartRelay, eventually
from tests.processes import free_port

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
SENTINEL_COMPOSE = "compose.sentinel.yaml"
COMPOSE_FILES = ("compose.yaml", SENTINEL_COMPOSE)
SENTINEL_PORT = 26379
# Names KEDA's redis-sentinel scaler reads (https://keda.sh/docs/latest/scalers/redis-sentinel-lists/,
# and the keda:"name=..." tags of its pkg/scalers/redis_scaler.go): those for a trigger's metadata
# (secrets, which it would also take there, belong in the TriggerAuthentication), and a
# TriggerAuthentication's parameters. KEDA ignores a misspelt name without a word.
KEDA_SENTINEL_METADATA = {
    "addresses",
    "addressesFromEnv",
    "hosts",
    "ports",
    "sentinelMaster",
    "sentinelMasterFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "sentinelUsernameFromEnv",
    "sentinelPasswordFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "databaseIndex",
    "enableTLS",
    "unsafeSsl",
}
KEDA_SENTINEL_AUTHENTICATION = {
    "addresses",
    "hosts",
    "ports",
    "sentinelMaster",
    "username",
    "password",
    "sentinelUsername",
    "sentinelPassword",
}
# ${NAME}, ${NAME:?message}, ${NAME:-default}, as compose interpolates them ($$ is a literal $).
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[?-][^}]*)?\}")


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


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    [found] = documents(DEPLOY / name)
    return dict(found)


def interpolated(text: str, values: Mapping[str, str]) -> str:
    """``text`` as compose passes it on, its variables taken from ``values`` (KeyError for another)."""
    return "$".join(INTERPOLATION.sub(lambda found: values[found[1]], part) for part in text.split("$$"))


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


def kustomized(root: Path = K8S) -> list[dict[str, Any]]:
    """What ``kubectl kustomize deploy/k8s`` (or ``root``) builds (Debian's kubectl package; .ci/run
    installs it)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("no kubectl: apt-get install kubectl (.ci/run does)")
    built = subprocess.run(
        [kubectl, "kustomize", str(root)], capture_output=True, text=True, timeout=60, check=False
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


# --- Kubernetes: the Sentinel component ----------------------------------------------------------


def with_sentinel_component(tmp_path: Path) -> list[dict[str, Any]]:
    """What an overlay of the base plus the component k8s/sentinel builds, written as its comment
    tells users to (kustomize refuses an overlay inside its base's directory)."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(K8S, overlay)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "components": [f"{base}/sentinel"],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomized(overlay)


def built_one(built: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [
        manifest for manifest in built if (manifest["kind"], manifest["metadata"]["name"]) == (kind, name)
    ]
    return found


def test_the_sentinel_component_is_no_part_of_the_base() -> None:
    [component] = documents(K8S / "sentinel" / "kustomization.yaml")
    assert (component["apiVersion"], component["kind"]) == ("kustomize.config.k8s.io/v1alpha1", "Component")
    assert "resources" not in component, "the component adds no Redis or anything else: it patches"
    patches = {patch["path"] for patch in component["patches"]}
    assert patches == {path.name for path in (K8S / "sentinel").glob("*.yaml")} - {"kustomization.yaml"}
    [kustomization] = documents(K8S / "kustomization.yaml")
    assert "components" not in kustomization


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_sentinel_component_builds_and_validates_strictly(version: str, tmp_path: Path) -> None:
    built = with_sentinel_component(tmp_path)
    for manifest in built:
        assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "relay"
        validated(manifest, version)
    # The same objects as the base: patched, none added (no Redis StatefulSet), none lost.
    names = {(manifest["kind"], manifest["metadata"]["name"]) for manifest in built}
    assert names == {(manifest["kind"], manifest["metadata"]["name"]) for manifest in kustomized()}


def test_the_sentinel_component_points_the_relay_and_keda_at_the_same_sentinels(
    tmp_path: Path, clean_environment: None
) -> None:
    built = with_sentinel_component(tmp_path)
    base = kustomized()
    keys = example_secret()
    config = built_one(built, "ConfigMap", "relay-config")["data"]
    assert not [name for name in config if SECRET_NAME.search(name)], "a secret in the ConfigMap"
    # Values the relay accepts: Sentinels, and acknowledged writes confirmed by one replica.
    redis = {name: value for name, value in config.items() if name.startswith("RELAY_REDIS_")}
    settings = Settings(**{name.removeprefix("RELAY_").lower(): value for name, value in redis.items()})
    assert settings.sentinels
    assert {port for _, port in settings.sentinels} == {SENTINEL_PORT}
    assert settings.redis_min_replicas_ack == 1

    for name in ("relay-ingress", "relay-worker"):
        [container] = pod_spec(built_one(built, "Deployment", name))["containers"]
        [before] = pod_spec(built_one(base, "Deployment", name))["containers"]
        env = {variable["name"]: variable for variable in container["env"]}
        assert set(env) == {variable["name"] for variable in before["env"]} | {
            "RELAY_REDIS_SENTINEL_PASSWORD"
        }
        for variable in ("RELAY_REDIS_URL", "RELAY_REDIS_SENTINEL_PASSWORD"):
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": variable}
            assert variable in keys, f"{variable} is not in secret.example.yaml"
        assert {"configMapRef": {"name": "relay-config"}} in container["envFrom"]

    [trigger] = built_one(built, "ScaledObject", "relay-worker")["spec"]["triggers"]
    [before] = built_one(base, "ScaledObject", "relay-worker")["spec"]["triggers"]
    assert trigger["type"] == "redis-sentinel"
    metadata = trigger["metadata"]
    assert set(metadata) <= KEDA_SENTINEL_METADATA, set(metadata) - KEDA_SENTINEL_METADATA
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA metadata values are strings"
    assert metadata["listName"] == arq.constants.default_queue_name
    assert metadata["listLength"] == before["metadata"]["listLength"]
    # KEDA asks the Sentinels the relay asks, for the primary of the service the relay uses.
    assert metadata["sentinelMaster"] == settings.redis_sentinel_service
    addresses = {address.strip() for address in metadata["addresses"].split(",")}
    assert addresses == {address.strip() for address in config["RELAY_REDIS_SENTINELS"].split(",")}
    assert int(metadata["databaseIndex"]) == int(urlsplit(keys["RELAY_REDIS_URL"]).path.strip("/"))
    assert metadata["enableTLS"] in {"true", "false"}

    authentication = built_one(built, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    parameters = {ref["parameter"]: ref for ref in authentication["spec"]["secretTargetRef"]}
    assert set(parameters) <= KEDA_SENTINEL_AUTHENTICATION, set(parameters) - KEDA_SENTINEL_AUTHENTICATION
    assert {"password", "sentinelPassword"} <= set(parameters)
    for ref in parameters.values():
        assert ref["name"] == SECRET
        assert ref["key"] in keys
    # The Sentinels' password is the relay's own setting, not a copy that could drift from it.
    assert parameters["sentinelPassword"]["key"] == "RELAY_REDIS_SENTINEL_PASSWORD"


# --- compose, Prometheus, Redis -----------------------------------------------------------------


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_validates_against_the_compose_spec(name: str) -> None:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    schema = json.loads(text)
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(compose(name))]
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


@pytest.mark.parametrize("file", COMPOSE_FILES)
def test_compose_secrets_come_from_the_env_file(file: str) -> None:
    """No literal secret in the compose files: only ${...} interpolations from deploy/.env, each
    variable in env.example and required (``:?``) where it is first needed."""
    text = (DEPLOY / file).read_text()
    assert "${REDIS_PASSWORD:?" in text
    for service in compose(file)["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(name):
                assert "${" in str(value), f"{name} is a literal"
    example = (DEPLOY / "env.example").read_text()
    for variable in set(INTERPOLATION.findall(text.replace("$$", ""))):
        assert "${" + variable + ":?" in text, f"{variable} is not required anywhere in {file}"
        assert re.search(rf"^{variable}=$", example, flags=re.M), f"{variable} is not in env.example"
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


# --- compose with Sentinel ----------------------------------------------------------------------


def sentinel_compose() -> dict[str, Any]:
    return dict(compose(SENTINEL_COMPOSE)["services"])


def redis_nodes(services: dict[str, Any]) -> dict[str, Any]:
    return {
        name: service
        for name, service in services.items()
        if service.get("command", [""])[0] == "redis-server"
    }


def sentinel_services(services: dict[str, Any]) -> dict[str, Any]:
    return {
        name: service
        for name, service in services.items()
        if service.get("command", [""])[0] == "sh" and "--sentinel" in sentinel_script(service)
    }


def option(command: list[str], name: str, count: int = 1) -> list[str]:
    """The ``count`` words after ``name`` in a command line; [] without ``name``."""
    if name not in command:
        return []
    at = command.index(name)
    return command[at + 1 : at + 1 + count]


def sentinel_script(service: dict[str, Any]) -> str:
    command = service["command"]
    assert command[:2] == ["sh", "-euc"], "a Sentinel's command is a shell script that writes its conf"
    return str(command[2])


def sentinel_conf(script: str) -> list[list[str]]:
    """The lines of the configuration ``script`` writes (its here-document), as words."""
    found = re.search(r"<<EOF\n(.*?)\nEOF\n", script, flags=re.S)
    assert found, "no here-document in the Sentinel's script"
    return [line.split() for line in found[1].splitlines() if line.strip()]


def directive(conf: list[list[str]], *words: str) -> list[str]:
    """What follows ``words`` on the one line of ``conf`` that starts with them."""
    [found] = [line[len(words) :] for line in conf if tuple(line[: len(words)]) == words]
    return found


def assert_hardened(name: str, service: dict[str, Any]) -> None:
    assert service["user"] not in {"root", "0"}, name
    assert service["read_only"] is True, name
    assert service["cap_drop"] == ["ALL"], name
    assert "no-new-privileges:true" in service["security_opt"], name
    assert service["healthcheck"]["test"][0] == "CMD-SHELL", name
    assert "mem_limit" in service, name
    assert "ports" not in service, f"{name} must not be published"
    [data] = [volume for volume in service["volumes"] if volume.endswith(":/data")]
    assert not data.startswith((".", "/")), f"{name}: /data is a named volume"


def primary_of(nodes: dict[str, Any]) -> str:
    [primary] = [name for name, node in nodes.items() if not option(node["command"], "--replicaof")]
    return primary


def test_the_sentinel_compose_runs_a_primary_two_replicas_and_three_sentinels() -> None:
    services = sentinel_compose()
    nodes, sentinels = redis_nodes(services), sentinel_services(services)
    assert (len(nodes), len(sentinels)) == (3, 3)
    primary = primary_of(nodes)
    volumes = set()
    for name, node in nodes.items():
        command = node["command"]
        # Every node is a full production Redis: redis.conf (AOF), its own volume, the same limits.
        assert command[:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
        assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in node["volumes"]
        volumes.update(volume for volume in node["volumes"] if volume.endswith(":/data"))
        if name != primary:
            assert option(command, "--replicaof", 2) == [primary, "6379"]
        # Any node may become a replica, and replicas are announced by name (a restart changes IPs).
        assert option(command, "--replica-announce-ip") == [name]
        for flag in ("--requirepass", "--masterauth"):
            assert option(command, flag)[0].startswith("${REDIS_PASSWORD:?"), f"{name}: {flag}"
        assert option(command, "--min-replicas-to-write") == ["1"]
        # A primary cut off from its replicas refuses writes before the Sentinels (5 s) replace it.
        assert 0 < int(option(command, "--min-replicas-max-lag")[0]) * 1000 < 5000
        assert parse_size(option(command, "--maxmemory")[0]) <= parse_size(node["mem_limit"]) * 0.7
        assert_hardened(name, node)
    assert len(volumes) == len(nodes), "each Redis node has a volume of its own"
    assert redis_conf()["appendonly"] == "yes"

    for name, sentinel in sentinels.items():
        script = sentinel_script(sentinel)
        conf = sentinel_conf(script)
        service, host, port, quorum = directive(conf, "sentinel", "monitor")
        assert (host, port) == (primary, "6379")
        assert quorum == "2", "a majority of the three Sentinels"
        assert directive(conf, "sentinel", "down-after-milliseconds", service) == ["5000"]
        assert directive(conf, "sentinel", "failover-timeout", service) == ["60000"]
        assert directive(conf, "sentinel", "parallel-syncs", service) == ["1"]
        assert directive(conf, "sentinel", "auth-pass", service) == ["$$REDIS_PASSWORD"]
        assert directive(conf, "requirepass") == ["$$SENTINEL_PASSWORD"]
        assert directive(conf, "sentinel", "resolve-hostnames") == ["yes"]
        assert directive(conf, "sentinel", "announce-hostnames") == ["yes"]
        assert directive(conf, "sentinel", "announce-ip") == ["$$ANNOUNCE_HOSTNAME"]
        assert directive(conf, "port") == [str(SENTINEL_PORT)]
        # `resolve-hostnames yes` must come before the `sentinel monitor` line that names a host.
        lines = [" ".join(line[:2]) for line in conf]
        assert lines.index("sentinel resolve-hostnames") < lines.index("sentinel monitor")
        environment = sentinel["environment"]
        assert environment["ANNOUNCE_HOSTNAME"] == name
        assert environment["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
        assert environment["SENTINEL_PASSWORD"].startswith("${SENTINEL_PASSWORD:?")
        # Sentinel rewrites its conf: it lives on the volume, written on the first start only.
        assert "conf=/data/" in script
        assert set(sentinel["depends_on"]) == {primary}
        assert_hardened(name, sentinel)


def test_the_sentinel_compose_points_the_relay_at_the_sentinels(clean_environment: None) -> None:
    services = sentinel_compose()
    nodes, sentinels = redis_nodes(services), sentinel_services(services)
    [monitored] = {
        directive(sentinel_conf(sentinel_script(s)), "sentinel", "monitor")[0] for s in sentinels.values()
    }
    single = compose()["services"]
    values = {"REDIS_PASSWORD": "redis-password", "SENTINEL_PASSWORD": "sentinel-password"}
    for name in ("ingress", "worker"):
        service = services[name]
        environment = service["environment"]
        redis = {key: value for key, value in environment.items() if key.startswith("RELAY_REDIS_")}
        settings = Settings(
            **{
                key.removeprefix("RELAY_").lower(): interpolated(value, values)
                for key, value in redis.items()
            }
        )
        assert sorted(settings.sentinels) == sorted((sentinel, SENTINEL_PORT) for sentinel in sentinels)
        assert settings.redis_sentinel_service == monitored
        assert settings.redis_sentinel_password is not None
        assert settings.redis_sentinel_password.get_secret_value() == values["SENTINEL_PASSWORD"]
        assert settings.redis_url is not None
        assert urlsplit(settings.redis_url).password == values["REDIS_PASSWORD"]
        # One replica of two: one may be down (maintenance, a resync) without 503s.
        assert settings.redis_min_replicas_ack == 1 < len(nodes) - 1
        assert service["depends_on"] == {sentinel: {"condition": "service_healthy"} for sentinel in sentinels}
        # Otherwise the very services of compose.yaml.
        others = {key: value for key, value in environment.items() if key not in redis}
        assert others == {
            key: value for key, value in single[name]["environment"].items() if key not in redis
        }
        assert {key: value for key, value in service.items() if key not in {"environment", "depends_on"}} == {
            key: value for key, value in single[name].items() if key not in {"environment", "depends_on"}
        }
    assert services["prometheus"] == single["prometheus"]


async def test_the_sentinel_compose_topology_boots_and_fails_over(
    tmp_path: Path, clean_environment: None
) -> None:
    """compose.sentinel.yaml's Redis command lines and Sentinel script, run by the local redis-server
    on loopback (service names mapped to 127.0.0.1 and ports of their own): the replicas follow the
    primary, the Sentinels authenticate to each other and agree, the relay's settings from the file
    reach the primary through them, and when the primary is killed a replica takes over with every
    write a replica had confirmed, and the relay's connections follow it."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    services = sentinel_compose()
    nodes, sentinels = redis_nodes(services), sentinel_services(services)
    primary = primary_of(nodes)
    [monitored] = {
        directive(sentinel_conf(sentinel_script(s)), "sentinel", "monitor")[0] for s in sentinels.values()
    }
    ports = {name: free_port() for name in [*nodes, *sentinels]}
    values = {"REDIS_PASSWORD": secrets.token_urlsafe(16), "SENTINEL_PASSWORD": secrets.token_urlsafe(16)}
    started: dict[str, asyncio.subprocess.Process] = {}
    clients: list[Redis] = []
    connections = None
    replicas: Replicas | None = None

    async def start(name: str, *args: str) -> None:
        with (tmp_path / f"{name}.log").open("wb") as log:
            started[name] = await asyncio.create_subprocess_exec(
                server, *args, stdout=log, stderr=asyncio.subprocess.STDOUT
            )

    def client(name: str, password: str) -> Redis:
        clients.append(Redis(host="127.0.0.1", port=ports[name], password=password, decode_responses=True))
        return clients[-1]

    try:
        for name, node in nodes.items():
            directory = tmp_path / name
            directory.mkdir()
            args = [interpolated(arg, values) for arg in node["command"][1:]]
            # A copy: Sentinel has the nodes rewrite their conf (CONFIG REWRITE) when it reconfigures
            # them, which compose's read-only mount refuses, and which would change deploy/ here.
            shutil.copyfile(DEPLOY / "redis.conf", directory / "redis.conf")
            args[args.index("/usr/local/etc/redis/redis.conf")] = str(directory / "redis.conf")
            args[args.index("--replica-announce-ip") + 1] = "127.0.0.1"
            if "--replicaof" in args:
                at = args.index("--replicaof")
                args[at + 1 : at + 3] = ["127.0.0.1", str(ports[args[at + 1]])]
            # The test's own: loopback, and no 5 s wait for more replicas before the first sync.
            local = ["--port", str(ports[name]), "--bind", "127.0.0.1", "--dir", str(directory)]
            await start(name, *args, *local, "--repl-diskless-sync-delay", "0")
        first = client(primary, values["REDIS_PASSWORD"])

        async def replicated() -> bool:
            try:  # refused (NOREPLICAS) until a replica is in sync: min-replicas-to-write
                await first.set("relay:probe", "1")
                return int(await first.execute_command("WAIT", len(nodes) - 1, 100)) == len(nodes) - 1
            except RedisError:
                return False

        await eventually(replicated, timeout=30, what="both replicas in sync with the primary")
        replica = client(next(name for name in nodes if name != primary), values["REDIS_PASSWORD"])
        with pytest.raises(ReadOnlyError):
            await replica.set("relay:probe", "2")

        for name, sentinel in sentinels.items():
            directory = tmp_path / name
            (directory / "bin").mkdir(parents=True)
            # The service's own script, with /data in the test's directory and a stand-in for
            # redis-server that records how it is called; run twice: the conf is written once.
            stand_in = directory / "bin" / "redis-server"
            stand_in.write_text(f'#!/bin/sh\necho "$@" > {directory}/called\n')
            stand_in.chmod(0o755)
            script = interpolated(sentinel_script(sentinel), values).replace("/data/", f"{directory}/")
            environment = {key: interpolated(value, values) for key, value in sentinel["environment"].items()}
            environment["PATH"] = f"{directory / 'bin'}:{os.environ['PATH']}"
            conf = directory / "sentinel.conf"
            for _ in range(2):
                ran = subprocess.run(["sh", "-euc", script], env=environment, timeout=10, check=False)
                assert ran.returncode == 0
                assert (directory / "called").read_text().split() == [str(conf), "--sentinel"]
                if not conf.read_text().endswith("# learnt\n"):
                    written = conf.read_text()
                    conf.write_text(written + "# learnt\n")  # as Sentinel rewrites it
            assert conf.read_text() == written + "# learnt\n", "written on the first start only"
            assert f"sentinel announce-ip {name}\n" in written
            assert f"requirepass {values['SENTINEL_PASSWORD']}\n" in written
            assert f"sentinel auth-pass {monitored} {values['REDIS_PASSWORD']}\n" in written
            # The same conf on loopback.
            lines = []
            for line in written.splitlines():
                words = line.split()
                if words[0] == "port":
                    words[1] = str(ports[name])
                elif words[:2] == ["sentinel", "monitor"]:
                    words[3:5] = ["127.0.0.1", str(ports[words[3]])]
                elif words[:2] == ["sentinel", "announce-ip"]:
                    words[2] = "127.0.0.1"
                lines.append(" ".join(words))
            conf.write_text("\n".join([*lines, "bind 127.0.0.1", f"dir {directory}", ""]))
            await start(name, str(conf), "--sentinel")
        watching = [client(name, values["SENTINEL_PASSWORD"]) for name in sentinels]

        async def agreed() -> bool:
            try:
                for sentinel in watching:
                    await sentinel.sentinel_ckquorum(monitored)
                    if len(await sentinel.sentinel_slaves(monitored)) != len(nodes) - 1:
                        return False
                    if len(await sentinel.sentinel_sentinels(monitored)) != len(sentinels) - 1:
                        return False
            except RedisError:  # NOQUORUM, or not started yet
                return False
            return True

        await eventually(agreed, timeout=30, what="the Sentinels to find the replicas and each other")
        with pytest.raises(AuthenticationError):
            await client(next(iter(sentinels)), "").ping()

        # The relay, configured as the file configures the ingress (the Sentinels on loopback).
        environment = services["ingress"]["environment"]
        redis = {key: interpolated(value, values) for key, value in environment.items() if "REDIS" in key}
        redis["RELAY_REDIS_SENTINELS"] = ",".join(f"127.0.0.1:{ports[name]}" for name in sentinels)
        settings = Settings(**{key.removeprefix("RELAY_").lower(): value for key, value in redis.items()})
        connections = open_connections(settings)
        relay = connections.redis
        replicas = Replicas.configured(relay, settings)

        async def acknowledged(key: str) -> bool:
            """A write, confirmed by the replicas as the relay confirms one before it answers."""
            await relay.set(key, "1")
            try:
                await replicas.confirm()
            except StoreUnavailable:
                return False
            return True

        assert await acknowledged("relay:before")
        assert await first.get("relay:before") == "1", "the relay wrote to the primary"

        # The primary is lost: after down-after-milliseconds two Sentinels agree, one promotes a
        # replica, and the relay's pool, its connection to the dead primary broken, asks again.
        started[primary].kill()

        async def followed() -> bool:
            try:
                _, port = await watching[-1].sentinel_get_master_addr_by_name(monitored)
                return int(port) != ports[primary] and await acknowledged("relay:after")
            except RedisError:  # the old primary is gone, or the new one has no replica yet
                return False

        await eventually(followed, timeout=40, what="a new primary, that the relay writes to")
        assert await relay.get("relay:before") == "1", "a write a replica confirmed survives the failover"
    finally:
        if replicas is not None:
            await replicas.aclose()
        if connections is not None:
            await connections.close()
        for opened in clients:
            await opened.aclose()
        # SIGKILL: a Redis refuses SIGTERM while it writes its first AOF or cannot save.
        for process in started.values():
            if process.returncode is None:
                process.kill()
        for process in started.values():
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
