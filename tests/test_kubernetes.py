"""The Kubernetes manifests, checked without a cluster: each object against its API schema, and the
objects against each other and against the service (settings, routes, metrics), so that what one
names exists and the numbers that must agree do.

Built-in kinds go through kubernetes-validate's strict schemas (unknown fields fail, as with kubectl's
field validation). It has no schema for custom resources nor for the Kustomization file, so those are
checked against the schemas below: the fields these manifests use, as the CRDs define them (KEDA
2.20 `keda.sh_scaledobjects.yaml`, prometheus-operator 0.93 `monitoring.coreos.com_servicemonitors.yaml`),
closed to unknown fields.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from tests.helpers import exposed_metric_names, promql_selectors, tool
from tests.k8s_schemas import CUSTOM_SCHEMAS

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "deploy" / "kubernetes"
# Applied on their own (each file says why): `kubectl apply -k` must not carry them.
APPLIED_APART = {"secret.yaml", "train-job.yaml"}
# The oldest release still common on managed clusters, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29", "1.37")


def _load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]


FILES = sorted(p.name for p in MANIFESTS.glob("*.yaml"))
DOCS = [(name, doc) for name in FILES for doc in _load(name)]
BY_KIND: dict[str, list[dict[str, Any]]] = {}
for _, _doc in DOCS:
    BY_KIND.setdefault(_doc["kind"], []).append(_doc)


def one(kind: str) -> dict[str, Any]:
    """The only object of a kind; fails if there are more or none."""
    [obj] = BY_KIND[kind]
    return obj


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A matchLabels selector's verdict on a set of labels."""
    return all(labels.get(key) == value for key, value in selector.items())


def server() -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment's pod spec and its one container."""
    pod = one("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    return pod, container


def config() -> dict[str, str]:
    """The server's settings as the ConfigMap gives them."""
    return one("ConfigMap")["data"]


def test_the_folder_holds_what_the_tests_expect():
    assert "kustomization.yaml" in FILES and set(FILES) >= APPLIED_APART
    assert {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"} <= set(BY_KIND)
    assert {"ScaledObject", "ServiceMonitor", "PersistentVolumeClaim", "Job"} <= set(BY_KIND)


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[f"{name}:{doc['kind']}" for name, doc in DOCS])
def test_every_object_validates_against_its_schema(name, doc):
    custom = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if custom is not None:
        jsonschema.validate(doc, custom)
        return
    for version in KUBERNETES_VERSIONS:  # a kind with no schema raises SchemaNotFoundError: it fails
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_applies_every_manifest_but_those_applied_apart():
    kustomization = one("Kustomization")
    assert set(kustomization["resources"]) == set(FILES) - {"kustomization.yaml"} - APPLIED_APART
    namespace = kustomization["namespace"]
    assert one("Namespace")["metadata"]["name"] == namespace
    for name, doc in DOCS:
        if name in APPLIED_APART:  # `kubectl apply -f` gets no namespace from the kustomization
            assert doc["metadata"]["namespace"] == namespace, name
        elif doc["kind"] not in ("Kustomization", "Namespace"):
            assert "namespace" not in doc["metadata"], f"{name}: the kustomization sets the namespace"


def test_selectors_find_the_server_pods():
    deployment = one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert matches(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    for spread in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert matches(spread["labelSelector"]["matchLabels"], pod_labels)
    _, container = server()
    port_names = {p["name"] for p in container["ports"]}
    for service in BY_KIND["Service"]:
        assert matches(service["spec"]["selector"], pod_labels), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names and port["port"] == int(config()["REWARD_PORT"])
    trainer_labels = one("Job")["spec"]["template"]["metadata"]["labels"]
    for service in BY_KIND["Service"]:  # a training pod must never get scoring traffic
        assert not matches(service["spec"]["selector"], trainer_labels), service["metadata"]["name"]


def test_config_map_and_env_are_settings_the_server_accepts(monkeypatch):
    _, container = server()
    [source] = container["envFrom"]
    assert source["configMapRef"]["name"] == one("ConfigMap")["metadata"]["name"]
    env = {**config(), **{e["name"]: e["value"] for e in container["env"]}}
    for name in env:
        if name.startswith("REWARD_"):
            assert name.removeprefix("REWARD_").lower() in Settings.model_fields, name
    assert all(name.startswith("REWARD_") for name in config()), "the ConfigMap holds settings only"
    for name in [n for n in os.environ if n.startswith("REWARD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("REWARD_"):
            monkeypatch.setenv(name, value)
    settings = Settings()  # the values parse: a bad dtype, device or number fails here
    assert settings.device.startswith("cuda") and settings.host == "0.0.0.0"
    assert not settings.auth_probes, "kubelet probes and the Prometheus scrape send no API key"


def test_probes_use_the_servers_routes_and_port():
    from app.api.system import router

    routes = {route.path for route in router.routes}
    _, container = server()
    [http] = [p for p in container["ports"] if p["name"] == "http"]
    assert http["containerPort"] == int(config()["REWARD_PORT"])
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        action = container[probe]["httpGet"]
        assert action["port"] == "http" and action["path"] in routes, probe
        paths[probe] = action["path"]
    # liveness must not wait for the model (a pod still loading would be killed and never load);
    # the startup probe does, so that loading is bounded
    assert paths == {"startupProbe": "/ready", "livenessProbe": "/health", "readinessProbe": "/ready"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_termination_grace_outlasts_the_pre_stop_sleep_and_the_drain():
    pod, container = server()
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] in ("sleep", "/bin/sleep") and len(command) == 2
    drain = float(config()["REWARD_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > float(command[1]) + drain


def test_pod_runs_unprivileged_on_one_gpu_with_writable_scratch():
    pod, container = server()
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    for kind in ("cpu", "memory"):
        assert kind in container["resources"]["requests"] and kind in container["resources"]["limits"]
    home = next(e["value"] for e in container["env"] if e["name"] == "HOME")
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/tmp", home):  # the only writable places on a read-only root
        assert "emptyDir" in volumes[mounted[path]], path


def test_volumes_bring_the_model_and_the_keys_where_the_settings_look():
    pod, container = server()
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(mounts) == set(volumes)
    claim = one("PersistentVolumeClaim")["metadata"]["name"]
    [models] = [n for n, v in volumes.items() if "persistentVolumeClaim" in v]
    assert volumes[models]["persistentVolumeClaim"]["claimName"] == claim
    assert mounts[models]["readOnly"] is True
    assert Path(config()["REWARD_MODEL"]).is_relative_to(mounts[models]["mountPath"])

    secret = one("Secret")
    [keys] = [n for n, v in volumes.items() if "secret" in v]
    assert volumes[keys]["secret"]["secretName"] == secret["metadata"]["name"]
    key_file = Path(next(e["value"] for e in container["env"] if e["name"] == "REWARD_API_KEY_FILE"))
    assert key_file.parent == Path(mounts[keys]["mountPath"]) and key_file.name in secret["stringData"]
    placeholder = secret["stringData"][key_file.name].splitlines()
    assert all(line.lstrip().startswith("#") for line in placeholder), "a committed key would be public"


def test_training_job_writes_the_model_the_server_reads():
    job = one("Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    _, serving = server()
    assert container["image"] == serving["image"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert container["command"] == ["reward-train"] and "reward-train" in scripts
    from training.config import RewardTrainingConfig

    args = container["args"]
    flags = [a.removeprefix("--") for a in args if a.startswith("--")]
    assert set(flags) <= set(RewardTrainingConfig.__dataclass_fields__), flags
    assert args[args.index("--output") + 1] == config()["REWARD_MODEL"]
    claim = one("PersistentVolumeClaim")["metadata"]["name"]
    [volume] = [v for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert not mount.get("readOnly"), "the trainer writes the model"


def scraped_service() -> dict[str, Any]:
    """The one Service the ServiceMonitor selects; a second one on the same pods would scrape every pod
    twice, and the autoscaler's sum would count every item twice."""
    selector = one("ServiceMonitor")["spec"]["selector"]["matchLabels"]
    [service] = [s for s in BY_KIND["Service"] if matches(selector, s["metadata"]["labels"])]
    return service


def test_service_monitor_scrapes_the_metrics_route_on_a_named_port():
    from app.api.system import router

    [endpoint] = one("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in scraped_service()["spec"]["ports"]}
    assert endpoint["path"] == "/metrics" and "/metrics" in {route.path for route in router.routes}


def test_autoscaler_scales_the_deployment_on_metrics_the_service_exports():
    scaled = one("ScaledObject")["spec"]
    deployment = one("Deployment")
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "an apply would reset the autoscaler's count"
    budget = one("PodDisruptionBudget")["spec"]["maxUnavailable"]
    assert scaled["minReplicaCount"] - budget >= 1, "a drain could take every server down"
    assert scaled["minReplicaCount"] <= scaled["maxReplicaCount"]

    from prometheus_client import generate_latest

    from app.metrics import Metrics

    exposed = exposed_metric_names(generate_latest(Metrics().registry).decode())
    # the Prometheus operator's target labels: job is the scraped Service's name
    target = {"namespace": one("Kustomization")["namespace"], "job": scraped_service()["metadata"]["name"]}
    for trigger in scaled["triggers"]:
        found = promql_selectors(trigger["metadata"]["query"])
        assert found, "the query reads no series"
        for selector in found:
            assert selector.name in exposed, selector.name
            assert {m.name: m.value for m in selector.matchers.matchers} == target
        # past the queue bound the server answers 429: the autoscaler must act before that
        assert float(trigger["metadata"]["threshold"]) < int(config()["REWARD_MAX_QUEUE_ITEMS"])


def test_kubectl_renders_the_kustomization_into_the_namespace():
    rendered = subprocess.run(
        [tool("kubectl"), "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    objects = [doc for doc in yaml.safe_load_all(rendered) if doc]
    namespace = one("Kustomization")["namespace"]
    expected = {
        (doc["kind"], doc["metadata"]["name"])
        for name in one("Kustomization")["resources"]
        for doc in _load(name)
    }
    assert {(o["kind"], o["metadata"]["name"]) for o in objects} == expected
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["kind"]
